"""The personality of AWS's vLLM container (`--api vllm`): OpenAI bodies on /invocations,
OpenAI's routes and errors, and no TGI or LMI routes. Served here on our engine
(`--engine builtin`); tests/vllm runs vLLM's."""

from __future__ import annotations

import httpx
import pytest

from tests.harness import start_model_server


@pytest.fixture(scope="module")
def vllm_container(tiny_dir, tmp_path_factory):
    server = start_model_server(
        {"SM_VLLM_MODEL": "tiny", "SM_VLLM_MAX_MODEL_LEN": "512"},
        model_dir=str(tmp_path_factory.mktemp("vllm")),
        api="vllm",
        engine="builtin",
    )
    yield server
    server.stop()


def test_invocations_take_openai_chat_and_completion_bodies(vllm_container):
    url = vllm_container.url + "/invocations"
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "temperature": 0}
    answer = httpx.post(url, json=chat, timeout=60).json()
    assert answer["object"] == "chat.completion" and answer["usage"]["completion_tokens"] == 4
    completion = httpx.post(url, json={"prompt": "hi", "max_tokens": 3}, timeout=60).json()
    assert completion["object"] == "text_completion"
    with httpx.stream("POST", url, json={**chat, "stream": True}, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line.startswith("data:")]
    assert lines[-1] == "data: [DONE]"


def test_a_tgi_body_is_refused_in_openais_error_form(vllm_container):
    response = httpx.post(
        vllm_container.url + "/invocations", json={"inputs": "hi", "parameters": {}}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert "OpenAI chat body (messages) or completion body (prompt)" in error["message"]


def test_only_openais_routes_and_the_containers(vllm_container):
    assert httpx.get(vllm_container.url + "/v1/models").json()["data"][0]["id"] == "tiny"
    assert httpx.get(vllm_container.url + "/info").json()["max_total_tokens"] == 512
    assert httpx.post(vllm_container.url + "/generate", json={"inputs": "hi"}).status_code == 404
