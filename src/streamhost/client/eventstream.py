"""SageMaker response streams: boto3 events and raw ``application/vnd.amazon.eventstream`` bytes.

Both forms carry the model's response body in ``PayloadPart`` messages and end early with a
``ModelStreamError`` or ``InternalStreamFailure`` exception message. Everything here turns them
into the plain payload bytes, raising this package's typed errors for the exceptions.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping
from typing import Any

from botocore.eventstream import EventStreamBuffer, ParserError
from botocore.exceptions import EventStreamError

from streamhost.client.errors import (
    InternalStreamFailure,
    ModelStreamError,
    ProtocolError,
    StreamError,
)

__all__ = [
    "EVENTSTREAM_CONTENT_TYPE",
    "EventStreamDecoder",
    "adecode_eventstream",
    "apayload_parts",
    "decode_eventstream",
    "error_from_event_stream_error",
    "error_of_message",
    "payload_parts",
]

EVENTSTREAM_CONTENT_TYPE = "application/vnd.amazon.eventstream"

_log = logging.getLogger(__name__)


def _exception(code: str, message: str, error_code: str | None = None) -> StreamError:
    if code == "ModelStreamError":
        return ModelStreamError(message, error_code=error_code)
    if code == "InternalStreamFailure":
        return InternalStreamFailure(message)
    # Any other exception the service adds later is still a failed stream, not a success.
    return StreamError(message, error_type=code or None)


def error_from_event_stream_error(error: EventStreamError) -> StreamError:
    """Translate botocore's ``EventStreamError`` (raised mid-iteration) into our typed error."""
    details = error.response.get("Error", {}) if isinstance(error.response, Mapping) else {}
    return _exception(str(details.get("Code", "")), str(details.get("Message", "")))


def _event_payload(event: Mapping[str, Any] | bytes) -> bytes | None:
    if isinstance(event, (bytes, bytearray, memoryview)):
        return bytes(event)
    if not isinstance(event, Mapping):
        raise TypeError(f"expected response-stream events or bytes, got {type(event).__name__}")
    part = event.get("PayloadPart")
    if isinstance(part, Mapping):
        return bytes(part.get("Bytes") or b"")
    for name in ("ModelStreamError", "InternalStreamFailure"):
        # Pre-parsed dict streams (e.g. other SDKs) deliver exceptions as ordinary events.
        body = event.get(name)
        if isinstance(body, Mapping):
            message = str(body.get("Message", ""))
            raise _exception(name, message, body.get("ErrorCode"))
    _log.warning("skipping unknown response-stream event %r", list(event)[:3])
    return None


def payload_parts(events: Iterable[Mapping[str, Any] | bytes]) -> Iterator[bytes]:
    """Yield the ``PayloadPart`` bytes of a boto3 response stream, skipping unknown events.

    botocore's ``EventStreamError`` becomes :class:`ModelStreamError` or
    :class:`InternalStreamFailure`; plain bytes items pass through unchanged.
    """
    iterator = iter(events)
    while True:
        try:
            event = next(iterator)
        except StopIteration:
            return
        except EventStreamError as error:
            raise error_from_event_stream_error(error) from error
        payload = _event_payload(event)
        if payload:
            yield payload


class EventStreamDecoder:
    """Incremental decoder of raw event-stream bytes into payload bytes.

    ``feed`` accepts any split of the byte stream. When an exception message follows payloads
    in the same ``feed``, those payloads are returned and the error is kept in ``error`` for
    ``raise_for_error`` (and every later call) to raise.
    """

    def __init__(self) -> None:
        self._buffer = EventStreamBuffer()
        self._pending = 0
        self.error: StreamError | None = None

    def feed(self, data: bytes) -> list[bytes]:
        """Add bytes; return the payloads of the messages they complete, in order."""
        self.raise_for_error()
        self._buffer.add_data(data)
        self._pending += len(data)
        payloads = []
        try:
            for message in self._buffer:
                self._pending -= message.prelude.total_length
                payload = self._payload(message.headers, message.payload)
                if payload:
                    payloads.append(payload)
        except ParserError as error:
            self.error = ProtocolError(f"malformed event-stream message: {error}")
            self.error.__cause__ = error
        except StreamError as error:
            self.error = error
        if not payloads:
            self.raise_for_error()
        return payloads

    def close(self) -> None:
        """Raise the stream's error, or :class:`ProtocolError` if it stopped inside a message."""
        self.raise_for_error()
        if self._pending:
            raise ProtocolError(f"event stream ended inside a message ({self._pending} bytes)")

    def raise_for_error(self) -> None:
        """Raise the error the stream ended with, if it has."""
        if self.error is not None:
            raise self.error

    @staticmethod
    def _payload(headers: Mapping[str, Any], payload: bytes) -> bytes | None:
        error = error_of_message(headers, payload)
        if error is not None:
            raise error
        if headers.get(":event-type") == "PayloadPart":
            return payload
        _log.warning("skipping unknown event-stream event %r", headers.get(":event-type"))
        return None


def error_of_message(headers: Mapping[str, Any], payload: bytes) -> StreamError | None:
    """The typed error an exception (or error) message stands for; None for an event."""
    message_type = headers.get(":message-type", "event")
    if message_type == "exception":
        code = str(headers.get(":exception-type", ""))
        body = _json_object(payload)
        message = str(body.get("Message", body.get("message", "")))
        return _exception(code, message, body.get("ErrorCode"))
    if message_type == "error":
        code = str(headers.get(":error-code", ""))
        return _exception(code, str(headers.get(":error-message", "")))
    return None


def _json_object(payload: bytes) -> Mapping[str, Any]:
    try:
        body = json.loads(payload)
    except ValueError:
        return {"Message": payload.decode("utf-8", "replace")}
    return body if isinstance(body, Mapping) else {}


def decode_eventstream(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Yield the payload bytes carried by raw event-stream bytes, split however they arrive."""
    decoder = EventStreamDecoder()
    for chunk in chunks:
        yield from decoder.feed(chunk)
        decoder.raise_for_error()
    decoder.close()


async def apayload_parts(
    events: AsyncIterable[Mapping[str, Any] | bytes],
) -> AsyncIterator[bytes]:
    """Async :func:`payload_parts`, e.g. for an aiobotocore response body."""
    iterator = aiter(events)
    while True:
        try:
            event = await anext(iterator)
        except StopAsyncIteration:
            return
        except EventStreamError as error:
            raise error_from_event_stream_error(error) from error
        payload = _event_payload(event)
        if payload:
            yield payload


async def adecode_eventstream(chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """Async :func:`decode_eventstream`."""
    decoder = EventStreamDecoder()
    async for chunk in chunks:
        for payload in decoder.feed(chunk):
            yield payload
        decoder.raise_for_error()
    decoder.close()
