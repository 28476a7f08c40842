"""``streamhost ui`` serves the chat UI, and Ctrl-C, SIGTERM (a service manager's stop) or
even SIGKILL stops it with everything it started."""

from __future__ import annotations

import signal
import subprocess

import pytest

from tests.harness import GatewayProcess, descendants, free_port, still_running, wait_until_serving

from .conftest import streamhost_command

# A Streamlit server per test.
pytestmark = pytest.mark.slow


def serving_ui(ui_gateway: GatewayProcess) -> tuple[subprocess.Popen, int, list]:
    """`streamhost ui` started as a shell starts a background job (SIGINT ignored: the command
    must not rely on inheriting its default handling), once the UI answers: the process, its
    port and the processes it started."""
    port = free_port()
    process = subprocess.Popen(
        [*streamhost_command("ui"), "--port", str(port), "--gateway", ui_gateway.url],
        env=ui_gateway.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        wait_until_serving(f"http://127.0.0.1:{port}/_stcore/health", process)
        family = descendants(process.pid)
        assert family, "streamlit runs as a child"
    except BaseException:
        process.kill()
        process.wait(30)
        raise
    return process, port, family


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_ui_serves_until_a_stop_signal(ui_gateway: GatewayProcess, signum: int) -> None:
    process, port, family = serving_ui(ui_gateway)
    process.send_signal(signum)
    try:
        status = process.wait(30)
    finally:
        if process.poll() is None:  # it did not stop: leave nothing running either way
            process.kill()
    assert status == 128 + signum
    assert f"http://127.0.0.1:{port}" in process.stderr.read()
    left = still_running(family, 15)
    assert not left, [p.pid for p in left]


def test_ui_killed_outright_leaves_no_server_behind(ui_gateway: GatewayProcess) -> None:
    process, _, family = serving_ui(ui_gateway)
    process.kill()  # no chance to stop its child: the kernel tells the child instead
    process.wait(30)
    process.stderr.close()
    left = still_running(family, 15)
    assert not left, [p.pid for p in left]
