"""Each route's Content-Type is the one the server it stands in for sends, seen by httpx.

TGI (axum's Sse) sends `text/event-stream` with no charset on every stream, its OpenAI
routes included; DJL Serving sends `text/event-stream` for its sse formatters; the OpenAI
API (and vLLM, which LMI runs) sends `text/event-stream; charset=utf-8`.
"""

from __future__ import annotations

import httpx
import pytest

from tests.harness import start_model_server

CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
COMPLETION = {"prompt": "hi", "max_tokens": 3}
TGI_BODY = {"inputs": "hi", "parameters": {"max_new_tokens": 3}}


@pytest.fixture(scope="module")
def synthetic_tgi(tmp_path_factory):
    server = start_model_server(
        {"HF_MODEL_ID": "synthetic:0"}, model_dir=str(tmp_path_factory.mktemp("m"))
    )
    yield server
    server.stop()


def _streamed_content_type(url: str, body: dict) -> str:
    with httpx.stream("POST", url, json=body, timeout=30) as response:
        assert response.status_code == 200
        chunks = b"".join(response.iter_raw())
        assert chunks.startswith(b"data:")
        return response.headers["content-type"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/generate_stream", TGI_BODY),
        ("/", {**TGI_BODY, "stream": True}),
        ("/invocations", {**TGI_BODY, "stream": True}),
        ("/v1/chat/completions", {**CHAT, "stream": True}),
        ("/v1/completions", {**COMPLETION, "stream": True}),
        ("/invocations", {**CHAT, "stream": True}),
    ],
)
def test_tgi_personality_streams_are_text_event_stream_without_a_charset(synthetic_tgi, path, body):
    assert _streamed_content_type(synthetic_tgi.url + path, body) == "text/event-stream"


def test_tgi_streams_keep_their_caching_and_buffering_headers(synthetic_tgi):
    with httpx.stream("POST", synthetic_tgi.url + "/generate_stream", json=TGI_BODY) as response:
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        assert response.headers["x-compute-type"] == "cpu+streamhost"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/generate", TGI_BODY),
        ("/", TGI_BODY),
        ("/invocations", TGI_BODY),
        ("/v1/chat/completions", CHAT),
        ("/v1/completions", COMPLETION),
        ("/generate", {"inputs": "hi", "parameters": {"temperature": -1}}),
        ("/v1/chat/completions", {"messages": "nope"}),
    ],
)
def test_answers_and_errors_are_application_json(synthetic_tgi, path, body):
    response = httpx.post(synthetic_tgi.url + path, json=body, timeout=30)
    assert response.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("formatter", "body", "content_type"),
    [
        ("sse", TGI_BODY, "text/event-stream"),
        ("tgi_compat", {**TGI_BODY, "stream": True}, "text/event-stream"),
        ("jsonlines", TGI_BODY, "application/jsonlines"),
        ("json", TGI_BODY, "application/json"),
        ("none", TGI_BODY, "text/plain; charset=utf-8"),
    ],
)
def test_lmi_formatters_send_their_media_type_as_written(tmp_path, formatter, body, content_type):
    env = {"OPTION_MODEL_ID": "synthetic:0", "OPTION_OUTPUT_FORMATTER": formatter}
    server = start_model_server(env, model_dir=str(tmp_path), api="lmi")
    try:
        with httpx.stream("POST", server.url + "/invocations", json=body, timeout=30) as response:
            assert response.status_code == 200
            response.read()
            assert response.headers["content-type"] == content_type
    finally:
        server.stop()


def test_lmi_personality_openai_streams_carry_a_charset_as_openai_does(tmp_path):
    server = start_model_server(
        {"OPTION_MODEL_ID": "synthetic:0"}, model_dir=str(tmp_path), api="lmi"
    )
    try:
        for path, body in [("/v1/chat/completions", CHAT), ("/v1/completions", COMPLETION)]:
            content_type = _streamed_content_type(server.url + path, {**body, "stream": True})
            assert content_type == "text/event-stream; charset=utf-8"
    finally:
        server.stop()
