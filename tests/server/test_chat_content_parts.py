"""Chat messages whose content is a list of parts, as the OpenAI SDK, vLLM's benchmark client
and LangChain send them: text parts joined with "\\n" as vLLM joins them, null content where
the API allows it, and parts the model cannot take refused with a 400 in the API's form."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamhost.server.openai import InvalidRequest, message_text, prompt_messages

PARTS = [{"type": "text", "text": "what is"}, {"type": "text", "text": "SageMaker?"}]
JOINED = "what is\nSageMaker?"


def _client(server):
    import openai  # 0.8 s: imported by the tests that use it, not by every worker's collection

    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def _bad_request() -> type[Exception]:
    import openai

    return openai.BadRequestError


def _chat(server, content, **kwargs):
    return _client(server).chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": content}],
        max_tokens=8,
        temperature=0,
        **kwargs,
    )


# -- through the real OpenAI SDK -------------------------------------------------------------


def test_text_parts_give_the_answer_of_their_text_joined_by_newlines(tgi_server):
    from_parts = _chat(tgi_server, PARTS)
    from_string = _chat(tgi_server, JOINED)
    assert from_parts.usage.prompt_tokens == from_string.usage.prompt_tokens
    assert from_parts.choices[0].message.content == from_string.choices[0].message.content
    unjoined = _chat(tgi_server, "what isSageMaker?")
    assert unjoined.usage.prompt_tokens != from_parts.usage.prompt_tokens


def test_text_parts_stream_through_the_openai_sdk(tgi_server):
    chunks = list(_chat(tgi_server, PARTS, stream=True, stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    from_string = _chat(tgi_server, JOINED)
    assert streamed == from_string.choices[0].message.content
    assert chunks[-1].usage.prompt_tokens == from_string.usage.prompt_tokens


def test_system_and_assistant_parts_and_a_null_assistant_content_are_accepted(tgi_server):
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": None},
        {"role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]},
        {"role": "user", "content": PARTS},
    ]
    out = _client(tgi_server).chat.completions.create(
        model="tiny", messages=messages, max_tokens=4, temperature=0
    )
    as_strings = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": ""},
        {"role": "assistant", "content": "No."},
        {"role": "user", "content": JOINED},
    ]
    same = _client(tgi_server).chat.completions.create(
        model="tiny", messages=as_strings, max_tokens=4, temperature=0
    )
    assert out.usage.prompt_tokens == same.usage.prompt_tokens
    assert out.choices[0].message.content == same.choices[0].message.content


@pytest.mark.parametrize(
    "part",
    [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_a_part_the_model_cannot_take_is_a_400_in_openais_shape(tgi_server, part, stream):
    with pytest.raises(_bad_request()) as refused:
        _chat(tgi_server, [PARTS[0], part], stream=stream)
    error = refused.value.response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "messages[0].content[1].type"
    assert repr(part["type"]) in error["message"] and "text only" in error["message"]


def test_a_null_user_content_is_a_400_in_openais_shape(tgi_server):
    with pytest.raises(_bad_request()) as refused:
        _chat(tgi_server, None)
    error = refused.value.response.json()["error"]
    assert error["param"] == "messages[0].content"
    assert "needs content" in error["message"]


# -- /invocations and stateful sessions ---------------------------------------------------------


def test_invocations_take_text_parts_and_refuse_images_in_tgis_shape(tgi_server):
    url = tgi_server.url + "/invocations"
    body = {"messages": [{"role": "user", "content": PARTS}], "max_tokens": 8, "temperature": 0}
    answer = httpx.post(url, json=body, timeout=60)
    assert answer.status_code == 200
    assert answer.json()["choices"][0]["message"]["content"] == (
        _chat(tgi_server, JOINED).choices[0].message.content
    )
    image = {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
    body["messages"][0]["content"] = [image]
    refused = httpx.post(url, json=body, timeout=60)
    assert refused.status_code == 400
    assert refused.json()["error_type"] == "invalid_request_error"
    assert "'image_url'" in refused.json()["error"]


def test_a_session_keeps_a_conversation_sent_as_parts(tgi_server):
    url = tgi_server.url + "/invocations"
    created = httpx.post(url, json={"requestType": "NEW_SESSION"})
    session = {"X-Amzn-SageMaker-Session-Id": created.json()["sessionId"]}
    params = {"max_tokens": 4, "temperature": 0}

    def turn(content, headers=None) -> str:
        body = {"messages": [{"role": "user", "content": content}], **params}
        answer = httpx.post(url, json=body, headers=headers or {}, timeout=60)
        assert answer.status_code == 200
        return answer.json()["choices"][0]["message"]["content"]

    first = turn(PARTS, session)
    second = turn([{"type": "text", "text": "again"}], session)
    whole = [
        {"role": "user", "content": JOINED},
        {"role": "assistant", "content": first},
        {"role": "user", "content": "again"},
    ]
    direct = httpx.post(url, json={"messages": whole, **params}, timeout=60).json()
    assert second == direct["choices"][0]["message"]["content"]


# -- the parser ---------------------------------------------------------------------------------


@given(st.lists(st.text(), max_size=5), st.sampled_from(["user", "system", "assistant", "tool"]))
def test_text_parts_join_with_newlines_for_any_role(texts, role):
    parts = [{"type": "text", "text": t} for t in texts]
    assert message_text({"role": role, "content": parts}, "m") == "\n".join(texts)


@given(
    st.lists(st.text(), max_size=3),
    st.sampled_from(["image_url", "input_audio", "file", "video_url", "audio", ""]),
)
def test_any_part_but_text_is_refused_with_its_place(texts, kind):
    parts = [{"type": "text", "text": t} for t in texts] + [{"type": kind}]
    with pytest.raises(InvalidRequest) as refused:
        prompt_messages([{"role": "user", "content": "x"}, {"role": "user", "content": parts}])
    assert refused.value.status == 400
    assert refused.value.param == f"messages[1].content[{len(texts)}].type"


@pytest.mark.parametrize(
    ("message", "param"),
    [
        ({"role": "user"}, "messages[0].content"),
        ({"role": "user", "content": 7}, "messages[0].content"),
        ({"role": "user", "content": ["just a string"]}, "messages[0].content[0].type"),
        ({"role": "user", "content": [{"type": "text"}]}, "messages[0].content[0].text"),
        (
            {"role": "user", "content": [{"type": "refusal", "refusal": "no"}]},
            "messages[0].content[0].type",
        ),
    ],
)
def test_malformed_content_is_refused_naming_the_parameter(message, param):
    with pytest.raises(InvalidRequest) as refused:
        prompt_messages([message])
    assert refused.value.param == param


def test_string_content_and_other_keys_pass_unchanged():
    message = {"role": "assistant", "content": "hi", "name": "bot", "tool_calls": []}
    assert prompt_messages([message]) == [message]
