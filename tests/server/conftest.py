"""A real model server on loopback (`tests.harness.start_model_server`) on the tiny model,
shared by every test that does not change it (one per test session, so per xdist worker)."""

from __future__ import annotations

import pytest

from tests.blog import SERVING_PROPERTIES
from tests.harness import start_model_server


@pytest.fixture(scope="session")
def tgi_server(tiny_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    server = start_model_server(
        {"HF_MODEL_ID": "tiny", "MAX_TOTAL_TOKENS": "2048", "MAX_INPUT_LENGTH": "1900"},
        model_dir=str(folder),
    )
    yield server
    server.stop()


@pytest.fixture(scope="session")
def lmi_server(tiny_dir, tmp_path_factory):
    """The LMI personality on the tiny model, with the original blog's serving.properties."""
    folder = tmp_path_factory.mktemp("lmi")
    (folder / "serving.properties").write_text(SERVING_PROPERTIES)
    server = start_model_server({}, model_dir=str(folder))
    yield server
    server.stop()


@pytest.fixture
def incremental_tokens() -> int:
    """How many tokens `test_tokens_arrive_incrementally` asks for: about 1 s of our engine
    on tiny."""
    return 256
