"""A real gateway (``streamhost gateway`` in a subprocess) with endpoints for the UI and the
terminal commands, started once for the tests of this folder."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamhost.deploy import DeploySpec, deploy
from streamhost.endpoints.clients import control_client
from tests.harness import GatewayProcess

ACCESS_KEY = "SHUITESTKEY000000000"
SECRET_KEY = "streamhost-ui-test-secret"
REPO = Path(__file__).resolve().parents[2]
OUTPUT = REPO / "test-output" / "ui"
CHAT_ENDPOINT = "chat"  # tiny, TGI API
SLOW_ENDPOINT = "slow"  # synthetic:25, TGI API


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


@pytest.fixture(scope="session")
def ui_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
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
    gateway = GatewayProcess(root, env=env, credentials=credentials)
    try:
        yield gateway.start()
    finally:
        left = gateway.stop(60)
        assert not left, f"processes outlived the gateway: {[p.pid for p in left]}"


@pytest.fixture
def gateway_home(ui_gateway: GatewayProcess, monkeypatch: pytest.MonkeyPatch) -> GatewayProcess:
    """The gateway, with this process's HOME and environment set as its users' would be."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "STREAMHOST_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(ui_gateway.home))
    return ui_gateway


KEYS = {"aws_access_key_id": ACCESS_KEY, "aws_secret_access_key": SECRET_KEY}


def _deployed(gateway: GatewayProcess, spec: DeploySpec) -> str:
    deploy(control_client(gateway.url, KEYS), spec, data_dir=gateway.home / "model-data")
    return spec.name


@pytest.fixture(scope="session")
def chat_endpoint(ui_gateway: GatewayProcess) -> str:
    """Endpoint ``chat``: the tiny model behind the TGI API."""
    return _deployed(
        ui_gateway, DeploySpec(CHAT_ENDPOINT, model="tiny", instance_type="ml.m5.large")
    )


@pytest.fixture(scope="session")
def slow_endpoint(ui_gateway: GatewayProcess) -> str:
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
