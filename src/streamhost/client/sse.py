"""Server-sent events, parsed as the WHATWG HTML spec says (section 9.2.6, "Interpreting an
event stream"), incrementally and from bytes.

Lines end in CR, LF or CRLF (a CRLF split across chunks still counts once); each complete line
is decoded as UTF-8 on its own, so a character split across chunks is never mangled. As the
spec requires, an event still missing its blank line when the stream ends is discarded, unless
the caller asks ``close`` to dispatch it.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass

__all__ = ["DONE", "SSEParser", "ServerSentEvent", "aiter_sse", "iter_sse"]

DONE = "[DONE]"
"""The data OpenAI-style streams send as their last event."""

_LINE_END = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class ServerSentEvent:
    """One dispatched event: its data (lines joined by ``\\n``), type, last event id and retry."""

    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None

    @property
    def is_done(self) -> bool:
        """True for the ``[DONE]`` sentinel that ends OpenAI-compatible streams."""
        return self.data.strip() == DONE


class SSEParser:
    """Incremental SSE parser: ``feed`` bytes, get the events they complete."""

    def __init__(self) -> None:
        self._reset()
        self.reconnection_time: int | None = None
        """The latest valid ``retry:`` value in milliseconds, as the spec's reconnection time."""

    def feed(self, data: bytes) -> list[ServerSentEvent]:
        """Add bytes; return the events they complete, in order."""
        if self._skip_lf and data:
            # The previous chunk ended in CR: an LF opening this one is the same line end.
            self._skip_lf = False
            if data[:1] == b"\n":
                data = data[1:]
        if not _LINE_END.search(data):
            self._buffer += data
            return []
        self._buffer += data
        events: list[ServerSentEvent] = []
        start = 0
        for match in _LINE_END.finditer(self._buffer):
            event = self._line(bytes(self._buffer[start : match.start()]))
            if event is not None:
                events.append(event)
            start = match.end()
        # A CR that ends the buffer may be the first half of a CRLF split across chunks.
        self._skip_lf = start == len(self._buffer) and self._buffer.endswith(b"\r")
        del self._buffer[:start]
        return events

    def close(self, *, dispatch_pending: bool = False) -> list[ServerSentEvent]:
        """End of stream; reset. An unfinished event is discarded, as the spec says, unless
        ``dispatch_pending`` asks for it (and any unterminated last line) to be dispatched."""
        events = []
        if dispatch_pending:
            if self._buffer:
                self._line(bytes(self._buffer))
            event = self._dispatch()
            if event is not None:
                events.append(event)
        self._reset()
        return events

    def _reset(self) -> None:
        self._buffer = bytearray()
        self._at_start = True
        self._skip_lf = False
        self._data: list[str] = []
        self._event = ""
        self._last_id: str | None = None
        self._retry: int | None = None

    def _line(self, raw: bytes) -> ServerSentEvent | None:
        if self._at_start:
            self._at_start = False
            raw = raw.removeprefix(_BOM)
        if not raw:
            return self._dispatch()
        line = raw.decode("utf-8", "replace")
        if line.startswith(":"):
            return None
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id":
            if "\0" not in value:
                self._last_id = value
        elif field == "retry" and value.isascii() and value.isdigit():
            self._retry = self.reconnection_time = int(value)
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        data, event, retry = self._data, self._event, self._retry
        self._data, self._event, self._retry = [], "", None
        if not data:
            return None
        return ServerSentEvent(
            data="\n".join(data), event=event or "message", id=self._last_id, retry=retry
        )


def iter_sse(chunks: Iterable[bytes]) -> Iterator[ServerSentEvent]:
    """Yield the events of a stream of byte chunks."""
    parser = SSEParser()
    for chunk in chunks:
        yield from parser.feed(chunk)


async def aiter_sse(chunks: AsyncIterable[bytes]) -> AsyncIterator[ServerSentEvent]:
    """Async :func:`iter_sse`."""
    parser = SSEParser()
    async for chunk in chunks:
        for event in parser.feed(chunk):
            yield event
