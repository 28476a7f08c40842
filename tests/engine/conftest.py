from __future__ import annotations

import pytest

from streamhost.engine import Engine, EngineConfig


@pytest.fixture(scope="module")
def engine(tiny_dir):
    """A tiny-model engine shared by a test module."""
    eng = Engine.load(EngineConfig(model="tiny", max_batch_size=32))
    yield eng
    eng.shutdown()


async def collect(stream):
    """All events of a stream."""
    return [event async for event in stream]
