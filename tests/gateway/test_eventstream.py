"""The event-stream encoder, checked against botocore's own decoder and SageMaker parser."""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler

import botocore.parsers
import botocore.session
import pytest
from botocore.config import Config
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer, EventStreamMessage
from botocore.exceptions import EventStreamError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamhost.client import eventencode
from streamhost.client.boto import boto3_session
from streamhost.client.eventencode import (
    CONTENT_TYPE,
    MAX_PAYLOAD_LENGTH,
    HeaderNameTooLong,
    HeaderValueOutOfRange,
    HeaderValueTooLong,
    Int8,
    Int16,
    Int32,
    Int64,
    InvalidHeaderName,
    PayloadTooLong,
    UnsupportedHeaderValue,
    encode_headers,
    encode_message,
    internal_stream_failure,
    model_stream_error,
    payload_part,
)
from tests.harness import examples

from ..loopback import LoopbackHTTPServer

# reference/sagemaker-hosting.md §2.3: a PayloadPart built by hand and decoded by botocore.
REFERENCE_PAYLOAD_PART = bytes.fromhex(
    "0000007800000059be379d37"
    "0b3a6576656e742d74797065" "07" "000b" "5061796c6f616450617274"
    "0d3a636f6e74656e742d74797065" "07" "0018"
    "6170706c69636174696f6e2f6f637465742d73747265616d"
    "0d3a6d6573736167652d74797065" "07" "0005" "6576656e74"
    "7b22746f6b656e223a226869227d0a"
    "463441e6"
)  # fmt: skip


def decode_all(data: bytes) -> list[EventStreamMessage]:
    buffer = EventStreamBuffer()
    buffer.add_data(data)
    return list(buffer)


class ChunkedBody:
    """Stands in for urllib3's response: botocore's EventStream only calls stream()."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    def stream(self) -> Iterator[bytes]:
        yield from self._chunks

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def response_stream_operation():
    model = botocore.session.get_session().get_service_model("sagemaker-runtime")
    return model, model.operation_model("InvokeEndpointWithResponseStream")


def response_stream(operation_info, chunks: list[bytes]):
    """Parse an HTTP 200 event-stream body exactly as botocore does for this operation."""
    model, operation = operation_info
    parser = botocore.parsers.create_parser(model.metadata["protocol"])
    response = {
        "status_code": 200,
        "headers": {"Content-Type": CONTENT_TYPE, "X-Amzn-SageMaker-Content-Type": "text/plain"},
        "body": ChunkedBody(chunks),
        "context": {"operation_name": operation.name},
    }
    parsed = parser.parse(response, operation.output_shape)
    return parsed["Body"]


def test_payload_part_is_byte_identical_to_reference_frame():
    assert payload_part(b'{"token":"hi"}\n') == REFERENCE_PAYLOAD_PART


def test_payload_part_carries_sagemaker_headers_and_payload():
    (message,) = decode_all(payload_part(b"hello"))
    assert message.headers == {
        ":event-type": "PayloadPart",
        ":content-type": "application/octet-stream",
        ":message-type": "event",
    }
    assert message.payload == b"hello"


def test_payload_part_of_empty_chunk_decodes():
    (message,) = decode_all(payload_part(b""))
    assert message.payload == b""


def test_payload_part_longer_than_head_cache_matches_generic_encoder():
    data = bytes(range(256)) * 40  # 10 KiB: not served from the cached heads
    headers = {
        ":event-type": "PayloadPart",
        ":content-type": "application/octet-stream",
        ":message-type": "event",
    }
    assert payload_part(data) == encode_message(headers, data)


def test_every_header_type_round_trips_through_botocore():
    when = datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=timezone.utc)
    ident = uuid.UUID("12345678-1234-5678-1234-567812345678")
    headers = {
        "true": True,
        "false": False,
        "int8": Int8(-128),
        "int16": Int16(32767),
        "int32": Int32(-(2**31)),
        "plain-int": 7,
        "big-int": 2**40,
        "int64": Int64(-(2**63)),
        "bytes": b"\x00\xffraw",
        "string": "héllo",
        "timestamp": when,
        "uuid": ident,
    }
    (message,) = decode_all(encode_message(headers, b"payload"))
    assert message.headers == {
        "true": True,
        "false": False,
        "int8": -128,
        "int16": 32767,
        "int32": -(2**31),
        "plain-int": 7,
        "big-int": 2**40,
        "int64": -(2**63),
        "bytes": b"\x00\xffraw",
        "string": "héllo",
        "timestamp": int(when.timestamp() * 1000),
        "uuid": ident.bytes,
    }
    assert message.payload == b"payload"


def test_integer_wrappers_choose_the_wire_type():
    # name length 1 + "a", then the type tag.
    assert encode_headers({"a": Int8(1)})[2] == eventencode.HeaderType.INT8
    assert encode_headers({"a": Int16(1)})[2] == eventencode.HeaderType.INT16
    assert encode_headers({"a": 1})[2] == eventencode.HeaderType.INT32
    assert encode_headers({"a": Int64(1)})[2] == eventencode.HeaderType.INT64


header_values = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.builds(Int8, st.integers(min_value=-(2**7), max_value=2**7 - 1)),
    st.builds(Int16, st.integers(min_value=-(2**15), max_value=2**15 - 1)),
    st.binary(max_size=300),
    st.text(max_size=100),
    st.uuids(),
    st.datetimes(
        min_value=datetime(1900, 1, 1),
        max_value=datetime(2200, 1, 1),
        timezones=st.just(timezone.utc),
    ),
)


def as_botocore_decodes(value):
    if isinstance(value, uuid.UUID):
        return value.bytes
    if isinstance(value, datetime):
        return (value - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(milliseconds=1)
    return value


@settings(max_examples=examples(60), deadline=None)
@given(headers=st.dictionaries(st.text(min_size=1, max_size=30), header_values, max_size=6))
def test_arbitrary_headers_round_trip_through_botocore(headers):
    (message,) = decode_all(encode_message(headers, b"x"))
    assert message.headers == {name: as_botocore_decodes(v) for name, v in headers.items()}


def test_payload_part_parses_as_sagemaker_response_stream(response_stream_operation):
    chunks = [payload_part(b'{"token": "a"}'), payload_part(b"\x00\x01binary")]
    events = list(response_stream(response_stream_operation, chunks))
    assert events == [
        {"PayloadPart": {"Bytes": b'{"token": "a"}'}},
        {"PayloadPart": {"Bytes": b"\x00\x01binary"}},
    ]


def test_model_stream_error_raises_event_stream_error_after_parts(response_stream_operation):
    chunks = [payload_part(b"partial"), model_stream_error("StreamBroken", "Connection reset")]
    stream = iter(response_stream(response_stream_operation, chunks))
    assert next(stream) == {"PayloadPart": {"Bytes": b"partial"}}
    with pytest.raises(EventStreamError) as raised:
        next(stream)
    assert raised.value.response["Error"] == {
        "Code": "ModelStreamError",
        "Message": "Connection reset",
    }


def test_model_stream_error_payload_has_sagemaker_member_names():
    (message,) = decode_all(model_stream_error("ModelInvocationTimeExceeded", "Too slow"))
    assert message.headers == {
        ":exception-type": "ModelStreamError",
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    # botocore drops ErrorCode when raising, so check it on the wire.
    assert json.loads(message.payload) == {
        "Message": "Too slow",
        "ErrorCode": "ModelInvocationTimeExceeded",
    }


def test_internal_stream_failure_raises_event_stream_error(response_stream_operation):
    chunks = [internal_stream_failure("The gateway failed")]
    with pytest.raises(EventStreamError) as raised:
        list(response_stream(response_stream_operation, chunks))
    assert raised.value.response["Error"] == {
        "Code": "InternalStreamFailure",
        "Message": "The gateway failed",
    }
    (message,) = decode_all(chunks[0])
    assert json.loads(message.payload) == {"Message": "The gateway failed"}


@settings(
    max_examples=examples(40),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    payloads=st.lists(st.binary(max_size=64 * 1024), min_size=1, max_size=4),
    data=st.data(),
)
def test_any_payloads_split_anywhere_decode_to_the_same_payloads(
    response_stream_operation, payloads, data
):
    stream = b"".join(payload_part(p) for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8), label="cuts"))
    bounds = [0, *cuts, len(stream)]
    chunks = [stream[start:end] for start, end in itertools.pairwise(bounds)]
    events = list(response_stream(response_stream_operation, chunks))
    assert [event["PayloadPart"]["Bytes"] for event in events] == payloads


def test_flipped_payload_bit_fails_botocore_message_crc():
    frame = bytearray(payload_part(b"some tokens"))
    frame[-6] ^= 0x01  # inside the payload
    with pytest.raises(ChecksumMismatch):
        decode_all(bytes(frame))


def test_flipped_length_bit_fails_botocore_prelude_crc():
    frame = bytearray(payload_part(b"some tokens"))
    frame[3] ^= 0x01  # total length
    with pytest.raises(ChecksumMismatch):
        decode_all(bytes(frame))


def test_payload_over_botocore_limit_is_refused():
    with pytest.raises(PayloadTooLong):
        payload_part(bytes(MAX_PAYLOAD_LENGTH + 1))


def test_header_value_over_limit_is_refused():
    with pytest.raises(HeaderValueTooLong):
        encode_headers({"big": "x" * 32768})


def test_header_name_over_255_bytes_is_refused():
    with pytest.raises(HeaderNameTooLong):
        encode_headers({"n" * 256: "v"})


def test_empty_header_name_is_refused():
    with pytest.raises(InvalidHeaderName):
        encode_headers({"": "v"})


def test_integer_outside_declared_width_is_refused():
    with pytest.raises(HeaderValueOutOfRange):
        encode_headers({"a": Int8(128)})


def test_unsupported_header_value_type_is_refused():
    with pytest.raises(UnsupportedHeaderValue):
        encode_headers({"a": 1.5})  # type: ignore[dict-item]


class StreamingHandler(BaseHTTPRequestHandler):
    """Answers every POST with the frames on the server, one HTTP chunk per frame."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("X-Amzn-SageMaker-Content-Type", "application/jsonlines")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for frame in self.server.frames:  # type: ignore[attr-defined]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(frame), frame))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_boto3_reads_frames_streamed_over_loopback_http():
    frames = [
        payload_part(b'{"token": "Hello"}\n'),
        payload_part(b'{"token": " world"}\n'),
        model_stream_error("ModelInvocationTimeExceeded", "Model took too long"),
    ]
    server = LoopbackHTTPServer(StreamingHandler)
    server.frames = frames  # type: ignore[attr-defined]
    server.start()
    try:
        client = boto3_session().client(
            "sagemaker-runtime",
            endpoint_url=server.url,
            region_name="us-east-1",
            aws_access_key_id="AKIDEXAMPLE",
            aws_secret_access_key="secret",
            config=Config(retries={"max_attempts": 1}),
        )
        response = client.invoke_endpoint_with_response_stream(
            EndpointName="default", Body=b"{}", ContentType="application/json"
        )
        assert response["ContentType"] == "application/jsonlines"
        received = []
        with pytest.raises(EventStreamError) as raised:
            for event in response["Body"]:
                received.append(event["PayloadPart"]["Bytes"])
        assert received == [b'{"token": "Hello"}\n', b'{"token": " world"}\n']
        assert raised.value.response["Error"]["Code"] == "ModelStreamError"
    finally:
        server.stop()
        server.server_close()
