"""The Ray tier's marks (see conftest.py)."""

from __future__ import annotations

import importlib.util

import pytest

RAY_INSTALLED = importlib.util.find_spec("ray") is not None
# Every module of the tier: `pytestmark = TIER`. One xdist group shares the cluster.
TIER = [
    pytest.mark.ray,
    pytest.mark.xdist_group("ray"),
    pytest.mark.skipif(
        not RAY_INSTALLED,
        reason="Ray is not installed (`make test` installs streamhost[ray])",
    ),
]
