"""Shared fixtures and the suite's parallel layout.

`make test` runs the suite on pytest-xdist workers (`--dist loadgroup`). Each test module
is one group, so a module's shared servers start once, on one worker; the UI tests share
one gateway for the whole folder, so the folder is one group. Each worker runs torch on one
thread: two workers on two cores, not four threads fighting over them (model-server
processes started by the tests choose their own threads, as in production).
"""

from __future__ import annotations

import sys

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            group = "ui" if item.nodeid.startswith("tests/ui/") else item.nodeid.split("::")[0]
            item.add_marker(pytest.mark.xdist_group(group))


def pytest_collection_finish(session: pytest.Session) -> None:
    torch = sys.modules.get("torch")  # imported by the test modules that need it
    if torch is not None and getattr(session.config, "workerinput", None) is not None:
        torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_dir():
    """Folder of the built-in tiny model."""
    from streamhost.engine.tiny import tiny_path

    return tiny_path()
