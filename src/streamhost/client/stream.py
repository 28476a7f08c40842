"""From a model's streamed response to text: ``stream_text`` and its async twin.

Framing (SSE, JSON lines, one JSON document, raw text) comes from the content type; the payload
shape (TGI, LMI, OpenAI) from ``format`` or, by default, from the first JSON object. The
decoding itself is :class:`StreamDecoder`, a push parser with no I/O, so sync and async
sources share every line of it.
"""

from __future__ import annotations

import codecs
import itertools
import json
import zlib
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import Any

from streamhost.client.decoders import (
    FORMATS,
    Decoder,
    StreamResult,
    TextDelta,
    decoder_for,
    detect_format,
)
from streamhost.client.errors import (
    ProtocolError,
    StreamError,
    error_from_payload,
    error_from_response,
)
from streamhost.client.eventstream import (
    EVENTSTREAM_CONTENT_TYPE,
    EventStreamDecoder,
    adecode_eventstream,
    apayload_parts,
    decode_eventstream,
    payload_parts,
)
from streamhost.client.lines import LineSplitter
from streamhost.client.sse import DONE, ServerSentEvent, SSEParser

__all__ = [
    "STREAM_FORMATS",
    "AsyncTextStream",
    "StreamDecoder",
    "TextStream",
    "astream_text",
    "stream_text",
]

STREAM_FORMATS = frozenset({*FORMATS, "sse", "text"})
"""Values for ``format=``: the payload formats, plus ``sse`` (SSE framing, shape detected) and
``text`` (raw UTF-8 text, e.g. LMI's ``none`` output formatter)."""

_SAGEMAKER_CONTENT_TYPE = "x-amzn-sagemaker-content-type"
_JSON_LINES_TYPES = frozenset(
    {
        "application/jsonlines",
        "application/json-lines",
        "application/jsonl",
        "application/x-jsonlines",
        "application/x-ndjson",
        "application/ndjson",
    }
)
_SSE_FORMATS = frozenset({"tgi", "openai", "sse"})
_SSE_FIELD_PREFIXES = (b"data:", b"event:", b"id:", b"retry:", b":")


class _Done:
    """Marks the ``[DONE]`` sentinel among decoded payloads."""


_DONE_PAYLOAD = _Done()


def _loads(data: str | bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError as error:
        text = data if isinstance(data, str) else data.decode("utf-8", "replace")
        raise ProtocolError(f"stream payload is not JSON: {text[:200]!r}") from error


# A framing turns body bytes into payloads: parsed JSON values, raw text, or _DONE_PAYLOAD.
# It consumes its input eagerly but returns a lazy iterator, so that a payload that fails to
# parse raises only after the payloads before it have been decoded.


class _SSEFraming:
    def __init__(self) -> None:
        self._parser = SSEParser()

    def feed(self, data: bytes) -> Iterator[Any]:
        return self._payloads(self._parser.feed(data))

    def close(self) -> Iterator[Any]:
        # Unlike a browser, keep an event whose blank line never came: it is the answer's end.
        return self._payloads(self._parser.close(dispatch_pending=True))

    @staticmethod
    def _payloads(events: list[ServerSentEvent]) -> Iterator[Any]:
        return (
            _DONE_PAYLOAD if event.is_done else _loads(event.data)
            for event in events
            if event.data.strip()
        )


class _LinesFraming:
    def __init__(self) -> None:
        self._splitter = LineSplitter()

    def feed(self, data: bytes) -> Iterator[Any]:
        return _line_payloads(self._splitter.feed(data))

    def close(self) -> Iterator[Any]:
        return _line_payloads(self._splitter.close())


def _line_payloads(lines: list[bytes]) -> Iterator[Any]:
    for line in lines:
        line = line.strip()
        if line:
            yield _DONE_PAYLOAD if line == DONE.encode() else _loads(line)


class _DocumentFraming:
    """One JSON document, complete only at the end (LMI's ``json`` output formatter)."""

    def __init__(self) -> None:
        self._body = bytearray()

    def feed(self, data: bytes) -> Iterator[Any]:
        self._body += data
        return iter(())

    def close(self) -> Iterator[Any]:
        body = bytes(self._body)
        if not body.strip():
            return iter(())
        try:
            document = json.loads(body)
        except ValueError:
            # Labelled application/json but actually JSON lines: still decodable.
            return _line_payloads(body.split(b"\n"))
        return iter(document if isinstance(document, list) else [document])


class _TextFraming:
    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def feed(self, data: bytes) -> Iterator[Any]:
        text = self._decoder.decode(data)
        return iter([text] if text else [])

    def close(self) -> Iterator[Any]:
        text = self._decoder.decode(b"", final=True)
        return iter([text] if text else [])


class _EventStreamFraming:
    """Event-stream messages whose payloads are themselves framed by ``inner``."""

    def __init__(self, inner: Any) -> None:
        self._decoder = EventStreamDecoder()
        self._inner = inner

    def feed(self, data: bytes) -> Iterator[Any]:
        return self._through_inner(self._decoder.feed(data))

    def close(self) -> Iterator[Any]:
        self._decoder.close()
        return self._inner.close()

    def _through_inner(self, payloads: list[bytes]) -> Iterator[Any]:
        for payload in payloads:
            yield from self._inner.feed(payload)
        self._decoder.raise_for_error()


class _SniffedFraming:
    """Picks a framing from the first bytes when neither content type nor format tells."""

    def __init__(self) -> None:
        self._head = bytearray()
        self._framing: Any = None

    def feed(self, data: bytes) -> Iterator[Any]:
        if self._framing is not None:
            return self._framing.feed(data)
        self._head += data
        framing = self._choose(final=False)
        return framing.feed(self._take_head()) if framing is not None else iter(())

    def close(self) -> Iterator[Any]:
        if self._framing is not None:
            return self._framing.close()
        framing = self._choose(final=True)
        return itertools.chain(framing.feed(self._take_head()), framing.close())

    def _take_head(self) -> bytes:
        head, self._head = bytes(self._head), bytearray()
        return head

    def _choose(self, *, final: bool) -> Any:
        head = bytes(self._head)
        if head[:1] == b"\x00":
            # Event-stream messages open with a big-endian length, so a zero byte, and a CRC.
            if len(head) < 12 and not final:
                return None
            if len(head) >= 12 and zlib.crc32(head[:8]) == int.from_bytes(head[8:12], "big"):
                self._framing = _EventStreamFraming(_SniffedFraming())
                return self._framing
        start = head.removeprefix(b"\xef\xbb\xbf").lstrip()
        if start.startswith((b"{", b"[")):
            self._framing = _LinesFraming()
        elif start.startswith(_SSE_FIELD_PREFIXES):
            self._framing = _SSEFraming()
        elif final or len(start) >= 6 or b"\n" in start:
            self._framing = _TextFraming()
        # Otherwise too little to tell "data:" from text yet.
        return self._framing


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _framing_for(content_type: str | None, format: str | None) -> Any:
    media = _media_type(content_type)
    if media == EVENTSTREAM_CONTENT_TYPE:
        return _EventStreamFraming(_framing_for(None, format))
    # A streaming media type is the truth about framing whatever the payload shape: LMI's
    # sse formatter sends token lines as events, its jsonlines_chat sends OpenAI chunks as lines.
    if media == "text/event-stream":
        return _SSEFraming()
    if media in _JSON_LINES_TYPES:
        return _LinesFraming()
    if format in _SSE_FORMATS:
        return _SSEFraming()
    if format in ("lmi", "lmi-token"):
        return _LinesFraming()
    if format == "json":
        return _DocumentFraming()
    if format == "text":
        return _TextFraming()
    if media == "application/json" or media.endswith("+json"):
        return _DocumentFraming()
    if media.startswith("text/"):
        return _TextFraming()
    return _SniffedFraming()


class _TextDecoder(Decoder):
    format = "text"

    def feed(self, payload: Any) -> TextDelta | None:
        if isinstance(payload, str):
            self._parts.append(payload)
            return TextDelta(payload)
        raise ProtocolError(f"a JSON payload in a raw-text stream: {payload!r}")


class StreamDecoder:
    """Push parser for one response body: ``feed`` bytes, get :class:`TextDelta` s.

    ``content_type`` is the body's media type (``application/vnd.amazon.eventstream`` too);
    ``format`` is one of :data:`STREAM_FORMATS` (default: detected from the first payload).
    An error after some deltas of the same call waits in ``error`` for ``raise_for_error``.
    """

    def __init__(self, content_type: str | None = None, format: str | None = None) -> None:
        if format is not None and format not in STREAM_FORMATS:
            raise ValueError(f"unknown stream format {format!r}; one of {sorted(STREAM_FORMATS)}")
        self._framing = _framing_for(content_type, format)
        self._decoder: Decoder | None = decoder_for(format) if format in FORMATS else None
        self.done = False
        """True once ``[DONE]``, an error or ``close`` ended the stream; later bytes are ignored."""
        self.error: StreamError | None = None

    @property
    def format(self) -> str | None:
        """The payload format in use, once known."""
        return self._decoder.format if self._decoder is not None else None

    def feed(self, data: bytes) -> list[TextDelta]:
        """Add body bytes; return the text deltas they complete."""
        self.raise_for_error()
        if self.done:
            return []
        return self._decode(self._framing.feed(data))

    def close(self) -> list[TextDelta]:
        """End of body: return the deltas of whatever was still buffered."""
        self.raise_for_error()
        if self.done:
            return []
        self.done = True
        return self._decode(self._framing.close())

    def raise_for_error(self) -> None:
        """Raise the error the stream ended with, if it has."""
        if self.error is not None:
            raise self.error

    def result(self) -> StreamResult:
        """The stream so far (final once ``done``)."""
        return self._decoder.result() if self._decoder is not None else StreamResult()

    def _decode(self, payloads: Iterator[Any]) -> list[TextDelta]:
        deltas: list[TextDelta] = []
        try:
            for payload in payloads:
                if payload is _DONE_PAYLOAD:
                    self.done = True
                    break
                decoder = self._decoder or self._choose_decoder(payload)
                if decoder is None:
                    continue
                delta = decoder.feed(payload)
                if delta is not None:
                    deltas.append(delta)
        except StreamError as error:
            self.error, self.done = error, True
            if not deltas:
                raise
        return deltas

    def _choose_decoder(self, payload: Any) -> Decoder | None:
        if isinstance(payload, str):
            self._decoder = _TextDecoder()
            return self._decoder
        error = error_from_payload(payload)
        if error is not None:
            raise error
        if payload == {}:
            return None
        format = detect_format(payload)
        if format is None:
            raise ProtocolError(f"unrecognised stream payload: {str(payload)[:200]}")
        self._decoder = decoder_for(format)
        return self._decoder


class TextStream:
    """Iterable of text deltas from one response; ``result`` holds the details once it ends."""

    def __init__(self, chunks: Iterable[bytes], decoder: StreamDecoder) -> None:
        self._chunks = chunks
        self._decoder = decoder

    @property
    def result(self) -> StreamResult:
        """Finish reason, token count, details and full text (partial until iteration ends)."""
        return self._decoder.result()

    def deltas(self) -> Iterator[TextDelta]:
        """Iterate :class:`TextDelta` objects (text plus token id and log-probability)."""
        for chunk in self._chunks:
            yield from self._decoder.feed(chunk)
            self._decoder.raise_for_error()
            if self._decoder.done:
                return
        yield from self._decoder.close()
        self._decoder.raise_for_error()

    def __iter__(self) -> Iterator[str]:
        for delta in self.deltas():
            yield delta.text


class AsyncTextStream:
    """Async iterable of text deltas from one response; ``result`` once it ends."""

    def __init__(
        self,
        open_chunks: Callable[[], AsyncIterator[bytes]],
        content_type: str | None,
        format: str | None,
    ) -> None:
        self._open_chunks = open_chunks
        # Built now so a bad format fails at the call, as in the sync version.
        self._decoder = StreamDecoder(content_type, format)

    @property
    def result(self) -> StreamResult:
        """Finish reason, token count, details and full text (partial until iteration ends)."""
        return self._decoder.result()

    async def deltas(self) -> AsyncIterator[TextDelta]:
        """Iterate :class:`TextDelta` objects (text plus token id and log-probability)."""
        async for chunk in self._open_chunks():
            for delta in self._decoder.feed(chunk):
                yield delta
            self._decoder.raise_for_error()
            if self._decoder.done:
                return
        for delta in self._decoder.close():
            yield delta
        self._decoder.raise_for_error()

    async def __aiter__(self) -> AsyncIterator[str]:
        async for delta in self.deltas():
            yield delta.text


def _header(headers: Any, name: str) -> str | None:
    if headers is None:
        return None
    value = headers.get(name)
    return str(value) if value is not None else None


def _body_of(response: Mapping[str, Any]) -> Any:
    try:
        return response["Body"]
    except KeyError:
        raise TypeError("expected an invoke_endpoint_with_response_stream response") from None


def stream_text(
    source: Any, *, format: str | None = None, content_type: str | None = None
) -> TextStream:
    """Text deltas of a streamed model response, as an iterable of ``str``.

    ``source`` is a boto3 ``invoke_endpoint_with_response_stream`` response (or its ``Body``),
    an httpx/requests response, or an iterable of bytes (give its ``content_type``).
    """
    if isinstance(source, Mapping):
        content_type = content_type or source.get("ContentType")
        return TextStream(payload_parts(_body_of(source)), StreamDecoder(content_type, format))
    if hasattr(source, "iter_bytes") or hasattr(source, "iter_content"):
        headers = getattr(source, "headers", None)
        return TextStream(
            _http_chunks(source), StreamDecoder(content_type or _payload_type(headers), format)
        )
    return TextStream(payload_parts(source), StreamDecoder(content_type, format))


def _payload_type(headers: Any) -> str | None:
    if _media_type(_header(headers, "content-type")) == EVENTSTREAM_CONTENT_TYPE:
        return _header(headers, _SAGEMAKER_CONTENT_TYPE)
    return _header(headers, "content-type")


def _is_eventstream(headers: Any) -> bool:
    return _media_type(_header(headers, "content-type")) == EVENTSTREAM_CONTENT_TYPE


def _http_chunks(response: Any) -> Iterator[bytes]:
    headers = getattr(response, "headers", None)
    status = getattr(response, "status_code", 200)
    is_httpx = hasattr(response, "iter_bytes")
    if status >= 400:
        body = response.read() if is_httpx else response.content
        raise error_from_response(status, body, _header(headers, "x-amzn-errortype"))
    # requests: chunk_size=None hands data over as it arrives instead of in 1-byte reads.
    chunks = response.iter_bytes() if is_httpx else response.iter_content(chunk_size=None)
    if _is_eventstream(headers):
        chunks = decode_eventstream(chunks)
    yield from chunks


def astream_text(
    source: Any, *, format: str | None = None, content_type: str | None = None
) -> AsyncTextStream:
    """Async :func:`stream_text`: an async iterable of ``str``.

    ``source`` is an httpx ``AsyncClient`` or aiohttp response, an aiobotocore response (or its
    ``Body``), or an async iterable of bytes (give its ``content_type``).
    """
    if isinstance(source, Mapping):
        body = _body_of(source)
        content_type = content_type or source.get("ContentType")
        return AsyncTextStream(lambda: apayload_parts(body), content_type, format)
    if hasattr(source, "aiter_bytes") or hasattr(getattr(source, "content", None), "iter_any"):
        content_type = content_type or _payload_type(getattr(source, "headers", None))
        return AsyncTextStream(lambda: _ahttp_chunks(source), content_type, format)
    if isinstance(source, AsyncIterable):
        return AsyncTextStream(lambda: apayload_parts(source), content_type, format)
    raise TypeError(f"cannot stream text from {type(source).__name__}")


async def _ahttp_chunks(response: Any) -> AsyncIterator[bytes]:
    headers = getattr(response, "headers", None)
    status = getattr(response, "status_code", None) or getattr(response, "status", 200)
    is_httpx = hasattr(response, "aiter_bytes")
    if status >= 400:
        body = await (response.aread() if is_httpx else response.read())
        raise error_from_response(status, body, _header(headers, "x-amzn-errortype"))
    chunks = response.aiter_bytes() if is_httpx else response.content.iter_any()
    if _is_eventstream(headers):
        chunks = adecode_eventstream(chunks)
    async for chunk in chunks:
        yield chunk
