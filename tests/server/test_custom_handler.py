"""A custom LMI model.py streams any bytes, through DJL Serving's handler API."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from tests.harness import start_model_server

MODEL_PY = """
import json
from djl_python import Input, Output

PNG = bytes(range(256)) * 40  # binary, with every byte value

def handle(inputs: Input):
    if inputs.is_empty():
        return None
    request = inputs.get_as_json()
    if request.get("fail"):
        raise RuntimeError("handler exploded")
    size = int(request.get("chunk", 1000))
    def chunks():
        for i in range(0, len(PNG), size):
            yield PNG[i : i + size]
    out = Output()
    out.add_property("content-type", "image/png")
    return out.add_stream_content(chunks(), output_formatter=None)
"""


@pytest.fixture(scope="module")
def custom_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("custom")
    (folder / "serving.properties").write_text("engine=Python\noption.entryPoint=model.py\n")
    (folder / "model.py").write_text(MODEL_PY)
    server = start_model_server({}, model_dir=str(folder))
    yield server
    server.stop()


def test_custom_handler_streams_binary_chunks_byte_for_byte(custom_server):
    expected = bytes(range(256)) * 40
    chunks = []
    with httpx.stream(
        "POST", custom_server.url + "/invocations", json={"chunk": 777}, timeout=30
    ) as r:
        assert r.headers["content-type"] == "image/png"
        chunks = list(r.iter_raw())
    body = b"".join(chunks)
    assert hashlib.sha256(body).digest() == hashlib.sha256(expected).digest()
    assert len(chunks) > 1


def test_custom_handler_failure_is_lmi_424(custom_server):
    response = httpx.post(custom_server.url + "/invocations", json={"fail": True})
    assert response.status_code == 424
    assert response.json()["error"] == "handler exploded"
