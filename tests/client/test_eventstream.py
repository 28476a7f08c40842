"""Raw event-stream decoding and boto3 event handling for SageMaker response streams."""

from __future__ import annotations

import pytest
from botocore.eventstream import EventStreamBuffer
from hypothesis import given, settings
from hypothesis import strategies as st

from streamhost.client import (
    EventStreamDecoder,
    InternalStreamFailure,
    ModelStreamError,
    ProtocolError,
    StreamError,
    adecode_eventstream,
    decode_eventstream,
    payload_parts,
)
from tests.harness import examples

from .streamwire import (
    boto3_response,
    encode_message,
    exception_message,
    frames,
    payload_part,
    split_at,
)

# The PayloadPart carrying {"token":"hi"}\n, as decoded by botocore in the reference notes.
REFERENCE_FRAME = bytes.fromhex(
    "0000007800000059be379d370b3a6576656e742d7479706507000b5061796c6f616450617274"
    "0d3a636f6e74656e742d747970650700186170706c69636174696f6e2f6f637465742d73747265616d"
    "0d3a6d6573736167652d747970650700056576656e747b22746f6b656e223a226869227d0a463441e6"
)


def test_test_encoder_matches_the_reference_frame_byte_for_byte():
    assert payload_part(b'{"token":"hi"}\n') == REFERENCE_FRAME


def test_botocore_decodes_the_test_encoder_frames():
    buffer = EventStreamBuffer()
    buffer.add_data(payload_part(b"abc"))
    (message,) = list(buffer)
    assert message.payload == b"abc"
    assert message.headers[":event-type"] == "PayloadPart"


def test_decoder_returns_payloads_of_complete_messages():
    decoder = EventStreamDecoder()
    assert decoder.feed(payload_part(b"one") + payload_part(b"two")) == [b"one", b"two"]


def test_decoder_waits_for_the_rest_of_a_split_message():
    decoder = EventStreamDecoder()
    assert decoder.feed(REFERENCE_FRAME[:30]) == []
    assert decoder.feed(REFERENCE_FRAME[30:]) == [b'{"token":"hi"}\n']


def test_model_stream_error_message_raises_with_its_error_code():
    body = {"Message": "model timed out", "ErrorCode": "ModelInvocationTimeExceeded"}
    with pytest.raises(ModelStreamError, match="model timed out") as caught:
        EventStreamDecoder().feed(exception_message("ModelStreamError", body))
    assert caught.value.error_code == "ModelInvocationTimeExceeded"


def test_internal_stream_failure_message_raises():
    with pytest.raises(InternalStreamFailure, match="internal"):
        EventStreamDecoder().feed(
            exception_message("InternalStreamFailure", {"Message": "internal"})
        )


def test_payloads_before_an_exception_message_are_delivered_first():
    decoder = EventStreamDecoder()
    data = payload_part(b"kept") + exception_message("ModelStreamError", {"Message": "x"})
    assert decoder.feed(data) == [b"kept"]
    with pytest.raises(ModelStreamError):
        decoder.close()


def test_unknown_exception_type_still_raises_a_stream_error():
    with pytest.raises(StreamError, match="new"):
        EventStreamDecoder().feed(exception_message("BrandNewFailure", {"Message": "new"}))


def test_error_message_type_uses_its_error_headers():
    message = encode_message(
        {":message-type": "error", ":error-code": "ModelStreamError", ":error-message": "bad"}, b""
    )
    with pytest.raises(ModelStreamError, match="bad"):
        EventStreamDecoder().feed(message)


def test_unknown_event_types_are_skipped():
    other = encode_message({":message-type": "event", ":event-type": "Heartbeat"}, b"zzz")
    assert list(decode_eventstream([other, payload_part(b"x")])) == [b"x"]


def test_corrupted_message_crc_is_a_protocol_error():
    corrupted = REFERENCE_FRAME[:-1] + bytes([REFERENCE_FRAME[-1] ^ 1])
    with pytest.raises(ProtocolError, match="malformed"):
        EventStreamDecoder().feed(corrupted)


def test_bytes_that_are_not_an_event_stream_are_a_protocol_error():
    with pytest.raises(ProtocolError):
        list(decode_eventstream([b'data: {"token": {"text": "hi"}}\n\n']))


def test_a_stream_ending_inside_a_message_is_a_protocol_error():
    with pytest.raises(ProtocolError, match="ended inside a message"):
        list(decode_eventstream([REFERENCE_FRAME[:-3]]))


async def test_adecode_eventstream_decodes_an_async_byte_stream():
    async def chunks():
        data = payload_part(b"a") + payload_part(b"b")
        for index in range(0, len(data), 7):
            yield data[index : index + 7]

    assert [payload async for payload in adecode_eventstream(chunks())] == [b"a", b"b"]


def test_payload_parts_turns_botocore_event_stream_error_into_model_stream_error():
    body = exception_message("ModelStreamError", {"Message": "broke", "ErrorCode": "StreamBroken"})
    response = boto3_response([payload_part(b"a"), body], "text/plain")
    parts = payload_parts(response["Body"])
    assert next(parts) == b"a"
    with pytest.raises(ModelStreamError, match="broke") as caught:
        next(parts)
    # botocore drops ErrorCode when it raises EventStreamError.
    assert caught.value.error_code is None


def test_payload_parts_turns_botocore_event_stream_error_into_internal_stream_failure():
    response = boto3_response(
        [exception_message("InternalStreamFailure", {"Message": "down"})], "text/plain"
    )
    with pytest.raises(InternalStreamFailure, match="down"):
        list(payload_parts(response["Body"]))


@settings(max_examples=examples(150), deadline=None)
@given(body=st.text(max_size=60), data=st.data())
def test_payload_survives_any_framing_and_any_byte_split(body, data):
    payload = body.encode()
    part_cuts = data.draw(st.lists(st.integers(0, len(payload)), max_size=6))
    stream = frames(payload, part_cuts)
    byte_cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
    assert b"".join(decode_eventstream(split_at(stream, byte_cuts))) == payload


@settings(max_examples=examples(100), deadline=None)
@given(body=st.text(max_size=60), data=st.data())
def test_boto3_event_stream_of_the_same_frames_gives_the_same_payload(body, data):
    payload = body.encode()
    stream = frames(payload, data.draw(st.lists(st.integers(0, len(payload)), max_size=6)))
    chunks = split_at(stream, data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    response = boto3_response(chunks, "application/octet-stream")
    assert b"".join(payload_parts(response["Body"])) == payload
