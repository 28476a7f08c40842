"""stream_text/astream_text: every source kind and wire format down to the same text."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamhost.client import (
    GenerationError,
    InternalStreamFailure,
    ModelStreamError,
    OverloadedError,
    ProtocolError,
    StreamDecoder,
    ValidationError,
    astream_text,
    stream_text,
)
from tests.harness import examples

from .streamwire import (
    WIRE_FORMATS,
    boto3_response,
    exception_message,
    frames,
    lmi_json_object,
    lmi_outputs_lines,
    lmi_sse,
    lmi_token_lines,
    openai_chat_sse,
    payload_part,
    split_at,
    tgi_sse,
)

TOKENS = ["Hello", ",", " wörld", " 🙂", " 世界"]
TEXT = "".join(TOKENS)


def text_of(source, **kwargs) -> str:
    return "".join(stream_text(source, **kwargs))


@pytest.mark.parametrize("name", sorted(WIRE_FORMATS))
def test_each_wire_format_is_detected_from_its_content_type(name):
    encode, content_type = WIRE_FORMATS[name]
    assert text_of([encode(TOKENS)], content_type=content_type) == TEXT


@pytest.mark.parametrize("name", sorted(WIRE_FORMATS))
def test_each_wire_format_is_sniffed_without_a_content_type(name):
    encode, _ = WIRE_FORMATS[name]
    assert text_of([encode(TOKENS)]) == TEXT


@pytest.mark.parametrize(
    ("encode", "format"),
    [
        (tgi_sse, "tgi"),
        (openai_chat_sse, "openai"),
        (lmi_outputs_lines, "lmi"),
        (lmi_token_lines, "lmi-token"),
        (lmi_sse, "sse"),
        (lmi_json_object, "json"),
    ],
)
def test_explicit_format_overrides_a_missing_or_wrong_content_type(encode, format):
    assert text_of([encode(TOKENS)], content_type="application/octet-stream", format=format) == TEXT


def test_lmi_token_format_over_text_event_stream_reads_sse_framing():
    # LMI's sse output formatter sends token lines as data: events.
    assert text_of([lmi_sse(TOKENS)], content_type="text/event-stream", format="lmi-token") == TEXT


def test_lmi_token_stream_reports_its_detected_format():
    decoder = StreamDecoder("application/jsonlines")
    decoder.feed(lmi_token_lines(TOKENS))
    assert decoder.format == "lmi-token"


def test_openai_chunks_as_json_lines_follow_the_content_type_framing():
    # LMI's jsonlines_chat output formatter.
    body = b"".join(
        json.dumps({"choices": [{"index": 0, "delta": {"content": text}}]}).encode() + b"\n"
        for text in TOKENS
    )
    assert text_of([body], content_type="application/jsonlines", format="openai") == TEXT


def test_unknown_format_is_rejected_at_the_call():
    with pytest.raises(ValueError, match="unknown stream format"):
        stream_text([b""], format="xml")


def test_result_holds_finish_reason_and_tokens_after_iteration():
    stream = stream_text([tgi_sse(TOKENS)], content_type="text/event-stream")
    assert "".join(stream) == TEXT
    result = stream.result
    assert (result.text, result.generated_text) == (TEXT, TEXT)
    assert (result.finish_reason, result.generated_tokens) == ("eos_token", len(TOKENS) + 1)


def test_deltas_carry_token_ids_and_logprobs():
    deltas = list(stream_text([tgi_sse(["a", "b"])]).deltas())
    assert [(delta.text, delta.token_id, delta.logprob) for delta in deltas] == [
        ("a", 1, -0.5),
        ("b", 2, -0.5),
    ]


def test_done_ends_the_stream_and_later_bytes_are_ignored():
    body = openai_chat_sse(["a"]) + b'data: {"choices": [{"index": 0, "text": "late"}]}\n\n'
    assert text_of([body]) == "a"


def test_openai_result_has_usage_and_finish_reason():
    stream = stream_text([openai_chat_sse(["a", "b"])], content_type="text/event-stream")
    "".join(stream)
    assert (stream.result.finish_reason, stream.result.generated_tokens) == ("stop", 2)


def test_tgi_in_band_validation_error_raises_after_earlier_text():
    body = tgi_sse(["a"])[: tgi_sse(["a"]).index(b"\n\n") + 2]
    body += b'data: {"error":"Input validation error: bad","error_type":"validation"}\n\n'
    stream = iter(stream_text([body], content_type="text/event-stream"))
    assert next(stream) == "a"
    with pytest.raises(ValidationError, match="Input validation error"):
        next(stream)


def test_tgi_error_as_first_event_raises_before_format_detection():
    body = b'data:{"error":"Model is overloaded","error_type":"overloaded"}\n\n'
    with pytest.raises(OverloadedError):
        text_of([body])


def test_openai_in_band_error_then_done_raises():
    body = b'data: {"error":{"message":"boom","http_status_code":422}}\n\ndata: [DONE]\n\n'
    with pytest.raises(ValidationError, match="boom"):
        text_of([body], content_type="text/event-stream")


def test_lmi_error_line_in_jsonlines_raises():
    body = b'{"outputs": ["a"]}\n{"code": 424, "error": "prediction failure"}\n'
    with pytest.raises(GenerationError, match="prediction failure"):
        text_of([body], content_type="application/jsonlines")


def test_sse_body_missing_its_final_blank_line_still_gives_the_last_event():
    body = tgi_sse(TOKENS).removesuffix(b"\n\n")
    assert text_of([body], content_type="text/event-stream") == TEXT


def test_sse_body_cut_inside_a_json_payload_is_a_protocol_error():
    body = tgi_sse(TOKENS)[:-20]
    with pytest.raises(ProtocolError, match="not JSON"):
        text_of([body], content_type="text/event-stream")


def test_non_json_payload_is_a_protocol_error():
    with pytest.raises(ProtocolError, match="not JSON"):
        text_of([b"data: hello\n\n"], content_type="text/event-stream")


def test_unrecognised_json_shape_is_a_protocol_error():
    with pytest.raises(ProtocolError, match="unrecognised"):
        text_of([b'{"weird": 1}\n'], content_type="application/jsonlines")


def test_plain_text_body_streams_as_raw_text():
    encoded = "raw 🙂 text".encode()
    assert text_of([encoded[:5], encoded[5:]], content_type="text/plain") == "raw 🙂 text"


def test_json_content_type_with_json_lines_body_still_decodes():
    assert text_of([lmi_outputs_lines(TOKENS)], content_type="application/json") == TEXT


def test_tgi_non_streaming_list_body_decodes():
    body = json.dumps([{"generated_text": "whole"}]).encode()
    assert text_of([body], content_type="application/json") == "whole"


def test_boto3_response_dict_streams_text_with_its_content_type():
    response = boto3_response([frames(lmi_token_lines(TOKENS), [3, 50])], "application/jsonlines")
    assert text_of(response) == TEXT


def test_boto3_body_alone_streams_text_by_sniffing():
    response = boto3_response([frames(tgi_sse(TOKENS), [10])], "text/event-stream")
    assert text_of(response["Body"]) == TEXT


def test_boto3_model_stream_error_becomes_model_stream_error():
    error = exception_message("ModelStreamError", {"Message": "x", "ErrorCode": "StreamBroken"})
    response = boto3_response(
        [payload_part(lmi_outputs_lines(["a"])), error], "application/jsonlines"
    )
    stream = iter(stream_text(response))
    assert next(stream) == "a"
    with pytest.raises(ModelStreamError):
        next(stream)


def test_raw_eventstream_bytes_with_their_content_type_decode():
    body = frames(openai_chat_sse(TOKENS), [1, 2, 3, 40])
    assert text_of([body], content_type="application/vnd.amazon.eventstream") == TEXT


def test_raw_eventstream_internal_failure_raises():
    body = payload_part(b'{"outputs": ["a"]}\n') + exception_message(
        "InternalStreamFailure", {"Message": "down"}
    )
    with pytest.raises(InternalStreamFailure, match="down"):
        text_of([body], content_type="application/vnd.amazon.eventstream")


def test_httpx_response_reads_content_type_from_headers():
    response = httpx.Response(
        200, headers={"content-type": "text/event-stream"}, content=iter([tgi_sse(TOKENS)])
    )
    assert text_of(response) == TEXT


def test_httpx_eventstream_response_uses_the_sagemaker_content_type_header():
    response = httpx.Response(
        200,
        headers={
            "content-type": "application/vnd.amazon.eventstream",
            "x-amzn-sagemaker-content-type": "application/jsonlines",
        },
        content=iter([frames(lmi_outputs_lines(TOKENS), [5])]),
    )
    assert text_of(response) == TEXT


def test_httpx_error_status_raises_from_its_json_body():
    response = httpx.Response(
        422, json={"error": "Input validation error: x", "error_type": "validation"}
    )
    with pytest.raises(ValidationError) as caught:
        text_of(response)
    assert caught.value.status_code == 422


def test_stream_decoder_is_push_based():
    decoder = StreamDecoder("application/jsonlines")
    assert decoder.feed(b'{"outputs": ["a') == []
    assert [delta.text for delta in decoder.feed(b'"]}\n')] == ["a"]
    assert decoder.close() == []
    assert decoder.done and decoder.format == "lmi"


async def test_astream_text_decodes_an_async_byte_stream():
    async def chunks():
        body = lmi_token_lines(TOKENS)
        for index in range(0, len(body), 5):
            yield body[index : index + 5]

    stream = astream_text(chunks(), content_type="application/jsonlines")
    assert "".join([text async for text in stream]) == TEXT
    assert stream.result.finish_reason == "length"


async def test_astream_text_reads_an_aiobotocore_shaped_response():
    async def events():
        yield {"PayloadPart": {"Bytes": lmi_outputs_lines(TOKENS)[:9]}}
        yield {"Unknown": {}}
        yield {"PayloadPart": {"Bytes": lmi_outputs_lines(TOKENS)[9:]}}

    response = {"Body": events(), "ContentType": "application/jsonlines"}
    assert "".join([text async for text in astream_text(response)]) == TEXT


async def test_astream_text_raises_model_stream_error_events():
    async def events():
        yield {"PayloadPart": {"Bytes": b'{"outputs": ["a"]}\n'}}
        yield {"ModelStreamError": {"Message": "late", "ErrorCode": "ModelInvocationTimeExceeded"}}

    texts = []
    with pytest.raises(ModelStreamError) as caught:
        async for text in astream_text({"Body": events()}):
            texts.append(text)
    assert (texts, caught.value.error_code) == (["a"], "ModelInvocationTimeExceeded")


async def test_astream_text_decodes_async_eventstream_bytes():
    async def chunks():
        yield frames(tgi_sse(TOKENS), [7, 70])

    stream = astream_text(chunks(), content_type="application/vnd.amazon.eventstream")
    assert "".join([text async for text in stream]) == TEXT


async def test_astream_text_reads_an_httpx_async_response():
    async def body():
        yield openai_chat_sse(TOKENS)

    response = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())
    assert "".join([text async for text in astream_text(response)]) == TEXT


async def test_astream_text_raises_on_an_http_error_response():
    async def body():
        yield b'{"error": "Model is overloaded", "error_type": "overloaded"}'

    response = httpx.Response(429, content=body())
    with pytest.raises(OverloadedError):
        [text async for text in astream_text(response)]


def test_astream_text_rejects_a_plain_sync_iterable():
    with pytest.raises(TypeError, match="cannot stream"):
        astream_text(42)


token_text = st.one_of(
    st.text(max_size=6),
    st.sampled_from(
        ["🙂", "世界", "é", "👩\u200d👩\u200d👧", "\n", "\r\n", '"', "\\", "\u2028", " "]
    ),
)


@settings(max_examples=examples(200), deadline=None)
@given(
    tokens=st.lists(token_text, max_size=12),
    name=st.sampled_from(sorted(WIRE_FORMATS)),
    framed=st.booleans(),
    labelled=st.booleans(),
    data=st.data(),
)
def test_any_text_in_any_format_survives_any_byte_split(tokens, name, framed, labelled, data):
    encode, content_type = WIRE_FORMATS[name]
    body = encode(tokens)
    if framed:
        body = frames(body, data.draw(st.lists(st.integers(0, len(body)), max_size=6)))
        content_type = "application/vnd.amazon.eventstream"
    chunks = split_at(body, data.draw(st.lists(st.integers(0, len(body)), max_size=12)))
    assert text_of(chunks, content_type=content_type if labelled else None) == "".join(tokens)


@settings(max_examples=examples(100), deadline=None)
@given(
    tokens=st.lists(token_text, max_size=12),
    name=st.sampled_from(sorted(WIRE_FORMATS)),
    data=st.data(),
)
def test_any_text_through_a_boto3_event_stream_survives_any_split(tokens, name, data):
    encode, content_type = WIRE_FORMATS[name]
    payload = encode(tokens)
    stream = frames(payload, data.draw(st.lists(st.integers(0, len(payload)), max_size=6)))
    chunks = split_at(stream, data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    assert text_of(boto3_response(chunks, content_type)) == "".join(tokens)
