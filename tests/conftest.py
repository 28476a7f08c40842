"""Shared fixtures: the built-in tiny model is built once per test session."""

from __future__ import annotations

import os

import pytest

# Tests never reach the Hugging Face hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_dir():
    """Folder of the built-in tiny model."""
    from streamhost.engine.tiny import tiny_path

    return tiny_path()
