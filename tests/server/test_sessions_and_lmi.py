"""Stateful sessions, the LMI personality and the original blog's LMI client loop."""

from __future__ import annotations

import json

import httpx

from tests.blog import LineIterator


def test_blog_lmi_loop_prints_the_generated_text(lmi_server):
    body = {"inputs": "what is SageMaker?", "parameters": {"max_new_tokens": 40}}
    printed = ""
    with httpx.stream("POST", lmi_server.url + "/invocations", json=body, timeout=60) as response:
        assert response.headers["content-type"] == "application/jsonlines"
        events = ({"PayloadPart": {"Bytes": chunk}} for chunk in response.iter_raw())
        for line in LineIterator(events):
            printed += json.loads(line)["outputs"][0]
    again = httpx.post(lmi_server.url + "/invocations", json=body, timeout=60).text
    lines = [json.loads(x)["outputs"][0] for x in again.splitlines()]
    assert printed and printed == "".join(lines)
    assert again.splitlines()[0].startswith('{"outputs": ["')


def test_lmi_max_new_tokens_defaults_to_30(lmi_server):
    text = httpx.post(
        lmi_server.url + "/invocations",
        json={"inputs": "hi", "parameters": {"ignore_eos_token": True}},
    ).text
    assert len(text.splitlines()) == 30


def test_lmi_ping_is_json_when_healthy(lmi_server):
    response = httpx.get(lmi_server.url + "/ping")
    assert response.status_code == 200
    assert list(response.json().values()) == [{"status": "Healthy"}]


def test_lmi_validation_error_is_a_json_4xx(lmi_server):
    response = httpx.post(
        lmi_server.url + "/invocations", json={"inputs": "hi", "parameters": {"temperature": -1}}
    )
    assert response.status_code == 422
    assert "temperature" in response.json()["message"]


def test_session_keeps_the_conversation(tgi_server):
    url = tgi_server.url + "/invocations"
    created = httpx.post(url, json={"requestType": "NEW_SESSION"})
    header = created.headers["X-Amzn-SageMaker-New-Session-Id"]
    session_id, expires = header.split("; ")
    assert expires.startswith("Expires=") and expires.endswith("Z")
    params = {"max_new_tokens": 4, "return_full_text": False}
    first = httpx.post(
        url,
        json={"inputs": "hello", "parameters": params},
        headers={"X-Amzn-SageMaker-Session-Id": session_id},
    ).json()[0]
    second = httpx.post(
        url,
        json={"inputs": " again", "parameters": params},
        headers={"X-Amzn-SageMaker-Session-Id": session_id},
    ).json()[0]
    # The second turn ran on the whole conversation: same as sending it in one prompt.
    whole = "hello" + first["generated_text"] + " again"
    direct = httpx.post(url, json={"inputs": whole, "parameters": params}).json()[0]
    assert second["generated_text"] == direct["generated_text"]
    closed = httpx.post(
        url, json={"requestType": "CLOSE"}, headers={"X-Amzn-SageMaker-Session-Id": session_id}
    )
    assert closed.headers["X-Amzn-SageMaker-Closed-Session-Id"] == session_id
    gone = httpx.post(
        url,
        json={"inputs": "x", "parameters": params},
        headers={"X-Amzn-SageMaker-Session-Id": session_id},
    )
    assert gone.status_code == 400 and "session not found" in gone.json()["error"]


def test_unknown_session_is_rejected(tgi_server):
    response = httpx.post(
        tgi_server.url + "/invocations",
        json={"inputs": "x"},
        headers={"X-Amzn-SageMaker-Session-Id": "no-such-session"},
    )
    assert response.status_code == 400
