"""The gateway tests' fixture: a real gateway on a thread (`tests.harness.GatewayThread`)
that starts real model-server processes; no model server may outlive it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import GatewayThread, running_gateway


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayThread]:
    with running_gateway(tmp_path / "state") as live:
        yield live
