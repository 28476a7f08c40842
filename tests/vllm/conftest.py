"""The vLLM tier: our APIs on `--engine vllm`, with real clients, in vLLM's environment.

vLLM's CPU build lives in its own virtual environment (`make test` installs it into
`.venv-vllm` and names its Python in STREAMHOST_VLLM_PYTHON), with streamhost installed
beside it: the model server and the gateway of this tier run on that Python, the clients
run here. vLLM's start (its compile warm-up) takes 1–2.5 minutes on this machine, so the
tier starts it at most twice: one model server shared by every test (`vllm_server`, one
xdist group), and the one instance `test_gateway_vllm` deploys. Where vLLM is not
installed the whole tier is skipped with one line saying why.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.harness import ModelServerProcess
from tests.vllm.tier import VLLM_ENV, VLLM_PYTHON, VLLM_START_TIMEOUT

# What the model servers' own `tgi_server` (tests/server/conftest.py) is started with, so
# the client suite imported into test_clients_on_vllm.py asserts the same limits.
TGI_ENV = {"HF_MODEL_ID": "tiny", "MAX_TOTAL_TOKENS": "2048", "MAX_INPUT_LENGTH": "1900"}


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServerProcess]:
    """One `serve-model --engine vllm` on `tiny` in float32, shared by the tier."""
    assert VLLM_PYTHON is not None
    log = tmp_path_factory.mktemp("vllm") / "serve-model.log"
    server = ModelServerProcess(
        log, "--engine", "vllm", python=VLLM_PYTHON, env={**VLLM_ENV, **TGI_ENV}, shared=True
    )
    try:
        server.wait_ready(VLLM_START_TIMEOUT)
        # vLLM's first requests after its start can take seconds more on a busy machine;
        # the clients under test keep their default timeouts (httpx: 5 s).
        body = {"inputs": "warm up", "parameters": {"max_new_tokens": 8}}
        for _ in range(2):
            httpx.post(server.url + "/generate", json=body, timeout=300).raise_for_status()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def builtin_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServerProcess]:
    """Our engine on the same model, for the comparisons (seconds to start)."""
    log = tmp_path_factory.mktemp("builtin") / "serve-model.log"
    server = ModelServerProcess(log, "--engine", "builtin", env=TGI_ENV, shared=True)
    try:
        yield server.wait_ready(120)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def tgi_server(vllm_server: ModelServerProcess) -> ModelServerProcess:
    """The model servers' client suite, pointed at the vLLM engine."""
    return vllm_server


@pytest.fixture
def incremental_tokens() -> int:
    """vLLM's CPU build makes tiny's tokens at ~150-400/s here: 600 tokens last 1.5-4 s, well
    beyond a moment's wait for a core. (Its engine core busy-polls a core; with the server in
    a session of its own, the client waited up to 3 s and read answers whole: see
    `streamhost.processes.own_group`.)"""
    return 600
