"""``streamhost ui`` serves the chat UI and Ctrl-C stops it with everything it started."""

from __future__ import annotations

import signal
import subprocess

from .conftest import Gateway, descendants, free_port, running, streamhost_command, wait_for


def test_ui_serves_until_ctrl_c(ui_gateway: Gateway) -> None:
    port = free_port()
    process = subprocess.Popen(
        [*streamhost_command("ui"), "--port", str(port), "--gateway", ui_gateway.url],
        env=ui_gateway.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/_stcore/health", process)
        family = descendants(process.pid)
        assert family, "streamlit runs as a child"
    finally:
        process.send_signal(signal.SIGINT)
        status = process.wait(30)
    assert status == 130
    assert f"http://127.0.0.1:{port}" in process.stderr.read()
    assert not running(family)
