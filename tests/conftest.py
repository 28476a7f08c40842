"""Shared fixtures: the built-in tiny model is built once per test session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_dir():
    """Folder of the built-in tiny model."""
    from streamhost.engine.tiny import tiny_path

    return tiny_path()
