"""Hostile and malformed input to the model server: each gets a clear 4xx, nothing breaks."""

from __future__ import annotations

import httpx
import pytest

from tests.harness import start_model_server

pytestmark = pytest.mark.reliability


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    live = start_model_server({"HF_MODEL_ID": "synthetic:1"}, model_dir=str(folder))
    yield live
    live.stop()


def still_serving(url: str) -> bool:
    r = httpx.post(url + "/generate", json={"inputs": "ok", "parameters": {"max_new_tokens": 2}})
    return r.status_code == 200 and r.json()["generated_text"] == "0 1 "


def post(url: str, content: bytes, path: str = "/generate") -> httpx.Response:
    return httpx.post(
        url + path, content=content, headers={"Content-Type": "application/json"}, timeout=30
    )


@pytest.mark.parametrize(
    "content",
    [
        b'{"inputs": "\xff\xfe broken utf-8"}',
        b'{"inputs": "x", "parameters": {"temperature": NaN}}',
        b'{"inputs": "x", "parameters": {"temperature": Infinity}}',
        b'{"inputs": "x", "parameters": {"temperature": 1e400}}',
        b"\x00\x01\x02",
        b"",
        b'{"inputs": ' * 2000,
    ],
)
def test_unparseable_bodies_are_400(server, content):
    r = post(server.url, content)
    assert r.status_code == 400
    assert r.json()["error_type"] == "validation"
    assert still_serving(server.url)


@pytest.mark.parametrize(
    ("parameters", "needle"),
    [
        ({"temperature": -1}, "temperature"),
        ({"max_new_tokens": -5}, "max_new_tokens"),
        ({"max_new_tokens": 10**15}, "max_new_tokens"),
        ({"top_p": 7}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"seed": 2**70}, "seed"),
        ({"seed": -1}, "seed"),
        ({"stop": ["x"] * 5000}, "stop"),
        ({"stop": "not a list"}, "stop"),
        ({"truncate": -3}, "truncate"),
        ({"top_n_tokens": 1000}, "top_n_tokens"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
    ],
)
def test_bad_parameters_are_422_naming_the_parameter(server, parameters, needle):
    r = httpx.post(server.url + "/generate", json={"inputs": "x", "parameters": parameters})
    assert r.status_code == 422, r.text
    assert needle in r.json()["error"]
    assert still_serving(server.url)


def test_control_characters_in_the_prompt_are_just_text(server):
    r = httpx.post(
        server.url + "/generate",
        json={"inputs": "a\x00b\x1b[31mc\u2028", "parameters": {"max_new_tokens": 3}},
    )
    assert r.status_code == 200


def test_ten_megabyte_body_is_413(server):
    r = post(server.url, b'{"inputs": "' + b"a" * 10_000_000 + b'"}')
    assert r.status_code == 413
    assert still_serving(server.url)


def test_openai_route_rejects_bad_shapes_with_openai_errors(server):
    for body in (
        {"messages": [{"role": "user", "content": "x"}], "n": 3},
        {"messages": 5},
        {"prompt": None},
    ):
        path = "/v1/completions" if "prompt" in body else "/v1/chat/completions"
        r = httpx.post(server.url + path, json=body)
        assert 400 <= r.status_code < 500
        assert r.json()["error"]["message"]
    assert still_serving(server.url)
