"""Shared fixtures and the suite's parallel layout.

`make test` runs the suite on pytest-xdist workers (`--dist loadgroup`). Each test module
is one group, so a module's shared servers start once, on one worker; tests that use a
session-wide server of a conftest (the UI tests' gateway and its endpoints, the model
servers' `tgi_server` and `lmi_server`) are one group per conftest, so each server starts
once. Each worker runs torch on one thread: three workers on two cores, not six threads
fighting over them (model-server processes started by the tests choose their own threads,
as in production).

Bytecode is written even where PYTHONDONTWRITEBYTECODE is set (as on CI machines): pytest
then keeps each test module's rewritten bytecode, and the second worker and later runs
import it instead of rewriting ~80 modules again (collection 15 s -> 9 s of CPU here).
schemathesis is used as a library (tests/reliability), not as a pytest plugin: its plugin
is left unloaded (`-p no:schemathesis` in pyproject.toml), 1.3 s of every worker's start.
"""

from __future__ import annotations

import sys

import pytest

sys.dont_write_bytecode = False

CHEAP = {"tiny_dir"}  # session fixtures too cheap to keep their tests on one worker


# Groups are handed to the workers longest first, as far as marks tell (`make test` runs
# with --no-loadscope-reorder, which keeps this order): a tier's shared server or cluster
# (minutes), then the slow, browser and reliability tests, then those marked `waits` (a
# test that mostly waits, tens of seconds), then the rest, each by its number of tests. A
# long group handed out last keeps one worker busy while the others idle: xdist's own
# order (by number of tests alone) ended the run with the bench scenarios.
RANKS = (("vllm", "ray"), ("slow", "browser", "reliability"), ("waits",))


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which reads the groups into node ids
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    groups: dict[str, list[pytest.Item]] = {}
    for item in items:
        marker = item.get_closest_marker("xdist_group")
        name = str(marker.args[0]) if marker is not None else _group(item)
        if marker is None:
            item.add_marker(pytest.mark.xdist_group(name))
        groups.setdefault(name, []).append(item)

    def rank(members: list[pytest.Item]) -> tuple[int, int]:
        marks = {mark.name for item in members for mark in item.iter_markers()}
        first = next((i for i, names in enumerate(RANKS) if marks & set(names)), len(RANKS))
        return first, -len(members)

    items[:] = [item for members in sorted(groups.values(), key=rank) for item in members]


def _group(item: pytest.Item) -> str:
    """The conftest of the first of our session-wide fixtures the test uses, else its module.
    (A conftest's session fixtures often build on each other, as the UI's endpoints on its
    gateway, or are used together, as the model servers' TGI and LMI personalities.)"""
    info = getattr(item, "_fixtureinfo", None)  # pytest's record of the test's fixtures
    for name, definitions in info.name2fixturedefs.items() if info else ():
        module = getattr(definitions[-1].func, "__module__", "")
        shared = definitions[-1].scope == "session" and name not in CHEAP
        if shared and module.startswith("tests."):
            return module
    return item.nodeid.split("::")[0]


def pytest_collection_finish(session: pytest.Session) -> None:
    grouped = any("@" in item.nodeid for item in session.items)
    if getattr(session.config.option, "loadgroup", False) and session.items and not grouped:
        raise pytest.UsageError(
            f"pytest-xdist's --dist loadgroup does not apply the test groups with pytest "
            f"{pytest.__version__}: install the pytest version pyproject.toml bounds"
        )
    torch = sys.modules.get("torch")  # imported by the test modules that need it
    if torch is not None and getattr(session.config, "workerinput", None) is not None:
        torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_dir():
    """Folder of the built-in tiny model."""
    from streamhost.engine.tiny import tiny_path

    return tiny_path()
