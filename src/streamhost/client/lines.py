"""Splitting a byte stream into lines, and the sample app's ``LineIterator`` without its bugs.

Bytes are only decoded per complete line: a multi-byte UTF-8 character (or a JSON object)
split across chunks is reassembled before anyone looks at it.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping
from typing import Any

from streamhost.client.eventstream import payload_parts

__all__ = ["LineIterator", "LineSplitter", "aiter_lines", "iter_lines"]


def _strip_cr(line: bytes) -> bytes:
    return line[:-1] if line.endswith(b"\r") else line


class LineSplitter:
    """Incremental splitter: feed byte chunks, get complete lines without their ``\\n``/``\\r\\n``.

    Blank lines are returned as ``b""``; ``close`` returns a last line that had no newline.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Add a chunk; return the lines it completes."""
        if b"\n" not in data:
            # Only the new bytes need scanning: the buffer never holds a newline.
            self._buffer += data
            return []
        self._buffer += data
        *lines, rest = self._buffer.split(b"\n")
        self._buffer = bytearray(rest)
        return [_strip_cr(bytes(line)) for line in lines]

    def close(self) -> list[bytes]:
        """Return the unterminated last line, if any, and reset."""
        rest, self._buffer = bytes(self._buffer), bytearray()
        return [_strip_cr(rest)] if rest else []


def iter_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Yield the lines of a stream of byte chunks (e.g. an HTTP body), the last one included."""
    splitter = LineSplitter()
    for chunk in chunks:
        yield from splitter.feed(chunk)
    yield from splitter.close()


async def aiter_lines(chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """Async :func:`iter_lines`."""
    splitter = LineSplitter()
    async for chunk in chunks:
        for line in splitter.feed(chunk):
            yield line
    for line in splitter.close():
        yield line


class LineIterator:
    """Lines of a boto3 ``invoke_endpoint_with_response_stream`` body, as bytes without ``\\n``.

    Drop-in for the SageMaker blog sample's class, minus its bugs: unknown events are logged
    and skipped, and a body that does not end in a newline yields its last line and stops.
    ``ModelStreamError``/``InternalStreamFailure`` raise this package's typed errors.
    """

    def __init__(self, stream: Iterable[Mapping[str, Any]]) -> None:
        self._lines = iter_lines(payload_parts(stream))

    def __iter__(self) -> LineIterator:
        return self

    def __next__(self) -> bytes:
        return next(self._lines)
