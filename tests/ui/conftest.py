"""A real gateway (``streamhost gateway`` in a subprocess) with endpoints for the UI and the
terminal commands, started once for the tests of this folder."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from streamhost.deploy import DeploySpec, deploy
from streamhost.endpoints.clients import control_client

ACCESS_KEY = "SHUITESTKEY000000000"
SECRET_KEY = "streamhost-ui-test-secret"
REPO = Path(__file__).resolve().parents[2]
OUTPUT = REPO / "test-output" / "ui"
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
CHAT_ENDPOINT = "chat"  # tiny, TGI API
SLOW_ENDPOINT = "slow"  # synthetic:25, TGI API


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def wait_for(url: str, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not http_ok(url):
        assert process.poll() is None, f"process exited with {process.returncode}"
        assert time.monotonic() < deadline, f"{url} did not answer within {timeout} s"
        time.sleep(0.2)


def tiny_cache() -> str:
    """The shared model cache, so a fresh HOME does not rebuild the tiny model."""
    from streamhost.engine.tiny import cache_root

    return str(cache_root())


def streamhost_command(name: str) -> list[str]:
    """``streamhost NAME`` if the main command has it, else the module that defines it."""
    from streamhost.cli import build_parser

    parser = build_parser()
    commands = next(
        action.choices
        for action in parser._actions
        if isinstance(getattr(action, "choices", None), dict)
    )
    if name in commands:
        return [sys.executable, "-m", "streamhost.cli", name]
    module = "streamhost.up" if name == "up" else "streamhost.console"
    return [sys.executable, "-m", module] + ([] if name == "up" else [name])


def descendants(pid: int) -> list[psutil.Process]:
    with contextlib.suppress(psutil.Error):
        return psutil.Process(pid).children(recursive=True)
    return []


def running(processes: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for process in processes:
        with contextlib.suppress(psutil.Error):
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
    return alive


def still_running(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Those of `processes` still running after waiting up to `timeout` seconds for all."""
    deadline = time.monotonic() + timeout
    while running(processes) and time.monotonic() < deadline:
        time.sleep(0.1)
    return running(processes)


def stop_process(process: subprocess.Popen, timeout: float = 60.0) -> list[psutil.Process]:
    """SIGTERM ``process`` and wait; return its descendants that outlived it (then kill them)."""
    family = descendants(process.pid)
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    deadline = time.monotonic() + 10
    while running(family) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = running(family)
    for leftover in left:
        with contextlib.suppress(psutil.Error):
            leftover.kill()
    return left


@dataclass
class Gateway:
    url: str
    home: Path
    env: dict[str, str]
    process: subprocess.Popen


@pytest.fixture(scope="session")
def ui_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """``streamhost gateway`` with SigV4 on, its key pair in ``<home>/.config/streamhost``."""
    root = tmp_path_factory.mktemp("ui-gateway")
    home = root / "home"
    credentials = home / ".config" / "streamhost" / "credentials"
    credentials.parent.mkdir(parents=True)
    credentials.write_text(
        f"[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "STREAMHOST_"))},
        "HOME": str(home),
        "STREAMHOST_CACHE": tiny_cache(),
    }
    port = free_port()
    log = (root / "gateway.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamhost.cli",
            "gateway",
            "--port",
            str(port),
            "--state",
            str(root / "gateway.db"),
            "--credentials",
            str(credentials),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{url}/ping", process)
        yield Gateway(url, home, env, process)
    finally:
        left = stop_process(process)
        log.close()
        assert not left, f"processes outlived the gateway: {[p.pid for p in left]}"


@pytest.fixture
def gateway_home(ui_gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> Gateway:
    """The gateway, with this process's HOME and environment set as its users' would be."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "STREAMHOST_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(ui_gateway.home))
    return ui_gateway


KEYS = {"aws_access_key_id": ACCESS_KEY, "aws_secret_access_key": SECRET_KEY}


def _deployed(gateway: Gateway, spec: DeploySpec) -> str:
    deploy(control_client(gateway.url, KEYS), spec, data_dir=gateway.home / "model-data")
    return spec.name


@pytest.fixture(scope="session")
def chat_endpoint(ui_gateway: Gateway) -> str:
    """Endpoint ``chat``: the tiny model behind the TGI API."""
    return _deployed(
        ui_gateway, DeploySpec(CHAT_ENDPOINT, model="tiny", instance_type="ml.m5.large")
    )


@pytest.fixture(scope="session")
def slow_endpoint(ui_gateway: Gateway) -> str:
    """Endpoint ``slow``: synthetic tokens every 25 ms, behind the TGI API."""
    return _deployed(
        ui_gateway, DeploySpec(SLOW_ENDPOINT, model="synthetic:25", instance_type="ml.m5.large")
    )


@pytest.fixture
def output_dir(request: pytest.FixtureRequest) -> Path:
    """``test-output/ui/<test name>``: screenshots kept after the run."""
    folder = OUTPUT / request.node.name
    folder.mkdir(parents=True, exist_ok=True)
    return folder
