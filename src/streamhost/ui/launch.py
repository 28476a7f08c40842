"""Serving the chat UI: the Streamlit command line (for ``streamhost ui`` and ``up``) and
``streamhost ui`` itself, which stops its Streamlit server with it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from streamhost.endpoints.clients import DEFAULT_ENDPOINT, ENDPOINT_ENV, GATEWAY_URL_ENV
from streamhost.processes import Stop, exit_with_parent, stop_process, stop_signals

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "run_ui", "streamlit_command"]

_APP = Path(__file__).parent / "app.py"
_STOP_TIMEOUT = 10.0

# The browser that the UI's browser tests and scripts/screenshot_chat.py drive: Debian's
# Chromium, headless, as root, with no background traffic (a closed network refuses it).
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def streamlit_command(port: int, address: str = "127.0.0.1") -> list[str]:
    """The command line that serves the chat UI with Streamlit."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(_APP),
        "--server.port",
        str(port),
        "--server.address",
        address,
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        # No "Deploy" (to Streamlit's cloud) button: this app is already deployed.
        "--client.toolbarMode",
        "minimal",
    ]


def run_ui(gateway_url: str, *, port: int = 8501, endpoint: str = DEFAULT_ENDPOINT) -> int:
    """``streamhost ui``: serve the chat UI until Ctrl-C, SIGTERM or SIGHUP (exit status 128 +
    the signal's number), stopping the Streamlit server with it."""
    env = {**os.environ, GATEWAY_URL_ENV: gateway_url, ENDPOINT_ENV: endpoint}
    Console(stderr=True).print(
        f"Chat UI on [bold]http://127.0.0.1:{port}[/] (gateway {gateway_url}); Ctrl-C stops it."
    )
    process = None
    with stop_signals():
        try:
            process = subprocess.Popen(
                streamlit_command(port), env=env, preexec_fn=exit_with_parent()
            )
            return process.wait()
        except Stop as stop:
            if process is not None:
                _stop(process)
            return 128 + stop.args[0]


def _stop(process: subprocess.Popen) -> None:
    stop_process(lambda: process.poll() is None, process.send_signal, _STOP_TIMEOUT)
