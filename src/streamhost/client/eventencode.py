"""Encoding of ``application/vnd.amazon.eventstream`` messages.

The counterpart of ``botocore/eventstream.py`` (which only decodes): pure functions that
turn headers and a payload into the bytes of one message, plus the three messages of the
SageMaker ``ResponseStream`` union (``PayloadPart``, ``ModelStreamError``,
``InternalStreamFailure``). All integers on the wire are big-endian::

    [total length u32][headers length u32][prelude CRC32 u32]
    [headers][payload]
    [message CRC32 u32]   <- CRC32 of every preceding byte of the message
"""

from __future__ import annotations

import json
import struct
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from enum import IntEnum
from zlib import crc32

__all__ = [
    "CONTENT_TYPE",
    "INTERNAL_STREAM_FAILURE",
    "MAX_PAYLOAD_LENGTH",
    "MODEL_INVOCATION_TIME_EXCEEDED",
    "MODEL_STREAM_ERROR",
    "PAYLOAD_PART",
    "STREAM_BROKEN",
    "EventStreamEncodeError",
    "HeaderNameTooLong",
    "HeaderType",
    "HeaderValue",
    "HeaderValueOutOfRange",
    "HeaderValueTooLong",
    "HeadersTooLong",
    "Int8",
    "Int16",
    "Int32",
    "Int64",
    "InvalidHeaderName",
    "PayloadTooLong",
    "UnsupportedHeaderValue",
    "encode_headers",
    "encode_message",
    "exception_message",
    "internal_stream_failure",
    "model_stream_error",
    "payload_part",
    "stream_part",
]

CONTENT_TYPE = "application/vnd.amazon.eventstream"

# Framing sizes.
PRELUDE_LENGTH = 12  # total length + headers length + prelude CRC
MESSAGE_CRC_LENGTH = 4
MESSAGE_OVERHEAD = PRELUDE_LENGTH + MESSAGE_CRC_LENGTH

# botocore's EventStreamBuffer rejects anything above these, so encoding more would produce a
# stream the client cannot read.
MAX_HEADERS_LENGTH = 128 * 1024
MAX_PAYLOAD_LENGTH = 24 * 1024 * 1024
MAX_HEADER_NAME_LENGTH = 255  # u8 length prefix
# The u16 prefix could say 65535, but AWS's reference codec (aws-c-event-stream) caps string and
# bytes values at INT16_MAX; staying inside that keeps us decodable by every AWS SDK.
MAX_HEADER_VALUE_LENGTH = 2**15 - 1

# SageMaker ResponseStream members (botocore sagemaker-runtime shape ``ResponseStream``).
PAYLOAD_PART = "PayloadPart"
MODEL_STREAM_ERROR = "ModelStreamError"
INTERNAL_STREAM_FAILURE = "InternalStreamFailure"
# ``ModelStreamError.ErrorCode`` values documented by SageMaker.
MODEL_INVOCATION_TIME_EXCEEDED = "ModelInvocationTimeExceeded"
STREAM_BROKEN = "StreamBroken"

_U8 = struct.Struct("!B")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_PRELUDE_LENGTHS = struct.Struct("!II")


class HeaderType(IntEnum):
    """Header value type tags, as numbered in botocore's ``_HEADER_TYPE_MAP``."""

    BOOL_TRUE = 0
    BOOL_FALSE = 1
    INT8 = 2
    INT16 = 3
    INT32 = 4
    INT64 = 5
    BYTES = 6
    STRING = 7
    TIMESTAMP = 8
    UUID = 9


class Int8(int):
    """An ``int`` sent as header type 2 (signed 8-bit)."""


class Int16(int):
    """An ``int`` sent as header type 3 (signed 16-bit)."""


class Int32(int):
    """An ``int`` sent as header type 4 (signed 32-bit); plain ints in range get this too."""


class Int64(int):
    """An ``int`` sent as header type 5 (signed 64-bit); plain ints beyond int32 get this too."""


HeaderValue = bool | int | bytes | str | datetime | uuid.UUID


class EventStreamEncodeError(ValueError):
    """Base class: the message cannot be encoded into a frame botocore would accept."""


class InvalidHeaderName(EventStreamEncodeError):
    """A header name is empty."""

    def __init__(self, name: str) -> None:
        super().__init__(f"Header name must not be empty: {name!r}")


class HeaderNameTooLong(EventStreamEncodeError):
    """A header name is longer than its u8 length prefix allows."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"Header name {name[:40]!r}... exceeds the maximum of {MAX_HEADER_NAME_LENGTH} bytes"
        )


class HeaderValueTooLong(EventStreamEncodeError):
    """A string or bytes header value is longer than allowed."""

    def __init__(self, name: str, length: int) -> None:
        super().__init__(
            f"Value of header {name!r} is {length} bytes, "
            f"exceeding the maximum of {MAX_HEADER_VALUE_LENGTH}"
        )


class HeaderValueOutOfRange(EventStreamEncodeError):
    """An integer header value does not fit its declared width."""

    def __init__(self, name: str, value: int, header_type: HeaderType) -> None:
        super().__init__(f"Value {value} of header {name!r} does not fit {header_type.name}")


class UnsupportedHeaderValue(EventStreamEncodeError):
    """A header value has a Python type with no event-stream encoding."""

    def __init__(self, name: str, value: object) -> None:
        super().__init__(f"Header {name!r} has unsupported value type {type(value).__name__}")


class HeadersTooLong(EventStreamEncodeError):
    """The encoded header block exceeds botocore's limit."""

    def __init__(self, length: int) -> None:
        super().__init__(f"Header length of {length} exceeded the maximum of {MAX_HEADERS_LENGTH}")


class PayloadTooLong(EventStreamEncodeError):
    """The payload exceeds botocore's limit; split it across several messages."""

    def __init__(self, length: int) -> None:
        super().__init__(f"Payload length of {length} exceeded the maximum of {MAX_PAYLOAD_LENGTH}")


# (format, type tag, minimum, maximum) for each fixed-width integer type.
_INTEGER_FORMATS: dict[HeaderType, tuple[struct.Struct, int, int]] = {
    HeaderType.INT8: (struct.Struct("!Bb"), -(2**7), 2**7 - 1),
    HeaderType.INT16: (struct.Struct("!Bh"), -(2**15), 2**15 - 1),
    HeaderType.INT32: (struct.Struct("!Bi"), -(2**31), 2**31 - 1),
    HeaderType.INT64: (struct.Struct("!Bq"), -(2**63), 2**63 - 1),
    HeaderType.TIMESTAMP: (struct.Struct("!Bq"), -(2**63), 2**63 - 1),
}
_INT_WRAPPERS: dict[type, HeaderType] = {
    Int8: HeaderType.INT8,
    Int16: HeaderType.INT16,
    Int32: HeaderType.INT32,
    Int64: HeaderType.INT64,
}
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MILLISECOND = timedelta(milliseconds=1)


def _encode_integer(name: str, value: int, header_type: HeaderType) -> bytes:
    fmt, low, high = _INTEGER_FORMATS[header_type]
    if not low <= value <= high:
        raise HeaderValueOutOfRange(name, value, header_type)
    return fmt.pack(header_type, value)


def _encode_length_prefixed(name: str, header_type: HeaderType, data: bytes) -> bytes:
    if len(data) > MAX_HEADER_VALUE_LENGTH:
        raise HeaderValueTooLong(name, len(data))
    return _U8.pack(header_type) + _U16.pack(len(data)) + data


def _encode_value(name: str, value: object) -> bytes:
    # bool before int: bool is an int subclass.
    if value is True:
        return _U8.pack(HeaderType.BOOL_TRUE)
    if value is False:
        return _U8.pack(HeaderType.BOOL_FALSE)
    if isinstance(value, int):
        header_type = _INT_WRAPPERS.get(type(value))
        if header_type is None:
            # An unmarked int takes the narrowest of the two common widths.
            in_int32 = -(2**31) <= value <= 2**31 - 1
            header_type = HeaderType.INT32 if in_int32 else HeaderType.INT64
        return _encode_integer(name, int(value), header_type)
    if isinstance(value, str):
        return _encode_length_prefixed(name, HeaderType.STRING, value.encode("utf-8"))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _encode_length_prefixed(name, HeaderType.BYTES, bytes(value))
    if isinstance(value, datetime):
        if value.tzinfo is None:
            # A naive datetime has no defined instant; the gateway works in UTC throughout.
            value = value.replace(tzinfo=timezone.utc)
        millis = (value - _EPOCH) // _MILLISECOND
        return _encode_integer(name, millis, HeaderType.TIMESTAMP)
    if isinstance(value, uuid.UUID):
        return _U8.pack(HeaderType.UUID) + value.bytes
    raise UnsupportedHeaderValue(name, value)


def _encode_name(name: str) -> bytes:
    encoded = name.encode("utf-8")
    if not encoded:
        raise InvalidHeaderName(name)
    if len(encoded) > MAX_HEADER_NAME_LENGTH:
        raise HeaderNameTooLong(name)
    return _U8.pack(len(encoded)) + encoded


def encode_headers(headers: Mapping[str, HeaderValue]) -> bytes:
    """Encode a header block; the value's Python type picks the wire type.

    ``bool`` → 0/1, ``Int8``/``Int16``/``Int32``/``Int64`` → that width, other ``int`` → int32
    (int64 if it does not fit), ``bytes`` → 6, ``str`` → 7, ``datetime`` → 8, ``UUID`` → 9.
    """
    block = b"".join(
        _encode_name(name) + _encode_value(name, value) for name, value in headers.items()
    )
    if len(block) > MAX_HEADERS_LENGTH:
        raise HeadersTooLong(len(block))
    return block


def _message_head(header_block: bytes, payload_length: int) -> bytes:
    # The single place that lays out the prelude: lengths, their CRC, then the headers.
    if payload_length > MAX_PAYLOAD_LENGTH:
        raise PayloadTooLong(payload_length)
    lengths = _PRELUDE_LENGTHS.pack(
        MESSAGE_OVERHEAD + len(header_block) + payload_length, len(header_block)
    )
    return lengths + _U32.pack(crc32(lengths)) + header_block


def encode_message(headers: Mapping[str, HeaderValue], payload: bytes = b"") -> bytes:
    """Encode one complete event-stream message (prelude, headers, payload, CRCs)."""
    message = _message_head(encode_headers(headers), len(payload)) + payload
    return message + _U32.pack(crc32(message))


# PayloadPart is the hot path (one message per token), so everything that does not depend on
# the payload is computed once: the header block, and the prelude plus headers for each of the
# short payload lengths that tokens have. A part then costs one CRC32 and one pack.
_PAYLOAD_PART_HEADERS = encode_headers(
    {
        ":event-type": PAYLOAD_PART,
        ":content-type": "application/octet-stream",
        ":message-type": "event",
    }
)
_PAYLOAD_PART_HEAD_CACHE_LIMIT = 4096  # payload lengths below this get a cached head
_payload_part_heads: dict[int, bytes] = {}


def payload_part(data: bytes) -> bytes:
    """Encode a ``PayloadPart`` event carrying ``data`` (one chunk of the model's response)."""
    length = len(data)
    head = _payload_part_heads.get(length)
    if head is None:
        head = _message_head(_PAYLOAD_PART_HEADERS, length)
        if length < _PAYLOAD_PART_HEAD_CACHE_LIMIT:
            _payload_part_heads[length] = head
    message = head + data
    # The message CRC covers every byte before it, prelude CRC included.
    return message + _U32.pack(crc32(message))


# A bidirectional stream's parts also say whether the data is text and whether it ends a
# message: four header blocks, and their heads per short length, made once.
_STREAM_PART_HEADERS = {
    (text, complete): encode_headers(
        {
            ":event-type": PAYLOAD_PART,
            ":content-type": "application/octet-stream",
            ":message-type": "event",
            "DataType": "UTF8" if text else "BINARY",
            "CompletionState": "COMPLETE" if complete else "PARTIAL",
        }
    )
    for text in (False, True)
    for complete in (False, True)
}
_stream_part_heads: dict[tuple[bool, bool, int], bytes] = {}


def stream_part(data: bytes, text: bool, complete: bool) -> bytes:
    """Encode a ``PayloadPart`` of a bidirectional stream: ``DataType`` ``UTF8`` (`text`) or
    ``BINARY``, ``CompletionState`` ``COMPLETE`` (`complete`) or ``PARTIAL``."""
    key = (text, complete, len(data))
    head = _stream_part_heads.get(key)
    if head is None:
        head = _message_head(_STREAM_PART_HEADERS[text, complete], len(data))
        if len(data) < _PAYLOAD_PART_HEAD_CACHE_LIMIT:
            _stream_part_heads[key] = head
    message = head + data
    return message + _U32.pack(crc32(message))


def exception_message(exception_type: str, body: Mapping[str, str]) -> bytes:
    """Encode an exception message of type `exception_type` with a JSON body."""
    headers = {
        ":exception-type": exception_type,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    payload = json.dumps(dict(body), separators=(",", ":")).encode("utf-8")
    return encode_message(headers, payload)


def model_stream_error(error_code: str, message: str) -> bytes:
    """Encode a ``ModelStreamError`` exception (``ErrorCode`` e.g. ``StreamBroken``)."""
    return exception_message(MODEL_STREAM_ERROR, {"Message": message, "ErrorCode": error_code})


def internal_stream_failure(message: str) -> bytes:
    """Encode an ``InternalStreamFailure`` exception: a fault of the gateway itself."""
    return exception_message(INTERNAL_STREAM_FAILURE, {"Message": message})
