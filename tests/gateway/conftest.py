"""The gateway tests' fixtures: a real gateway on a thread (`tests.harness.GatewayThread`)
that starts real model-server processes; no model server may outlive it. `gateway` is a
test's own; `module_gateway` is shared by a module's tests, for endpoints they use without
changing what the next test sees."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import GatewayThread, running_gateway


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayThread]:
    with running_gateway(tmp_path / "state") as live:
        yield live


@pytest.fixture(scope="module")
def module_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayThread]:
    with running_gateway(tmp_path_factory.mktemp("gateway") / "state") as live:
        yield live
