"""The gateway's HTTP/1.1 client for its own hop to the instances: small, pooled, chunk-aware.

The relay needs four things of a client: send one POST with a body already in memory, hand
over the answer's HTTP chunks as they arrive (their boundaries kept: a chunk is a PayloadPart),
let another task interrupt a wait (client gone, stream deadline), and keep connections open
between requests. A general client (aiohttp) does much more per request and per chunk; on a
2-core machine that cost shows in the first-token latency and in the tokens/s left to the
model, so this module does only those four things, with httptools' C parser (uvicorn's) on
the answer.

Waiting for chunks returns every chunk that has arrived, so a relay that fell behind catches
up without a wait per chunk; a reader may also take the chunks that arrive while it waits in
the connection's own callback (`UpstreamResponse.push`), without being woken at all. Reading
pauses when more than `_HIGH_WATER` bytes wait for the relay (a client reading slowly slows
the instance's socket, not the gateway's memory). A pooled connection that the instance
closed while idle is retried once on a fresh one when it fails before any byte of an answer
came back: the instance never read that request.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Any

import httptools

__all__ = ["ConnectFailed", "UpstreamBroken", "UpstreamPool", "UpstreamResponse"]

_HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024


class ConnectFailed(ConnectionError):
    """No connection to the instance: the request was never sent."""


class UpstreamBroken(ConnectionError):
    """The connection failed or closed before the answer was complete."""


class UpstreamResponse:
    """The instance's answer: status and headers, then its body as it arrives."""

    __slots__ = (
        "_aborted",
        "_buffered",
        "_chunked",
        "_connection",
        "_current",
        "_error",
        "_heard",
        "_parts",
        "_timer",
        "_waiter",
        "complete",
        "headers",
        "keep_alive",
        "push",
        "status",
    )

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection
        self.status = 0
        self.headers: dict[str, str] = {}  # lower-case names; repeated ones comma-joined
        self.keep_alive = False
        self.complete = False  # the whole body has arrived
        self._chunked = False
        self._current: list[bytes] = []  # pieces of the chunk being received
        self._parts: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._error: BaseException | None = None  # the connection failed
        self._aborted: BaseException | None = None  # the reader gave up
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._heard = 0.0  # loop time the wait began or `push` last took a chunk
        # Set by a reader while it waits in `chunks`: a chunk that arrives then, with none
        # queued before it, is offered to it here, in the connection's callback, and is
        # only queued (and the reader woken) if it returns False. The relay writes a chunk
        # this way without a task switch.
        self.push: Callable[[bytes], bool] | None = None

    async def chunks(self, timeout: float | None = None) -> list[bytes]:
        """Every body chunk received and not yet taken, waiting up to `timeout` seconds
        for one; `[]` once the body is complete. Raises `UpstreamBroken`, what `abort` was
        given, or `asyncio.TimeoutError`."""
        if self._aborted is not None:
            raise self._aborted
        if not self._parts and not self.complete and self._error is None:
            await self._wait(timeout)
            if self._aborted is not None:
                raise self._aborted
        if self._parts:
            parts = list(self._parts)
            self._parts.clear()
            self._buffered = 0
            self._connection.resume()
            return parts
        if self._error is not None:
            raise self._error
        return []

    async def read(self, limit: int, timeout: float | None = None) -> tuple[bytes, bool]:
        """(the body, whether it is whole): at most `limit` bytes are kept; reading stops
        there, and a body cut short leaves the connection to be closed."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        kept: list[bytes] = []
        size = 0
        while True:
            left = None if deadline is None else max(0.0, deadline - loop.time())
            parts = await self.chunks(left)
            if not parts:
                return b"".join(kept), True
            for part in parts:
                if size + len(part) > limit:
                    kept.append(part[: limit - size])
                    return b"".join(kept), False
                kept.append(part)
                size += len(part)

    def abort(self, error: BaseException) -> None:
        """Make the pending (or next) `chunks` raise `error` at once, whatever has arrived
        (the reader is giving up); the caller then closes."""
        if self._aborted is None:
            self._aborted = error
        self._wake()

    def interrupt(self) -> None:
        """Make a pending `chunks` return at once with what has arrived, maybe nothing
        (the reader has something else to do first)."""
        self._wake()

    def release(self) -> None:
        """Give the connection back to the pool if the answer is complete, else close it."""
        self._connection.finish(self, reusable=self.complete and self.keep_alive)

    def close(self) -> None:
        """Close the connection: the instance sees its client leave."""
        self._connection.finish(self, reusable=False)

    # -- fed by the connection -------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self, timeout: float | None) -> None:
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        if timeout is not None:
            self._heard = loop.time()
            self._timer = loop.call_later(timeout, self._silence_check, waiter, timeout)
        try:
            await waiter
        finally:
            self._waiter = None
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def _silence_check(self, waiter: asyncio.Future[None], timeout: float) -> None:
        # The wait's time counts from the last chunk `push` took: chunks it took are not
        # silence.
        loop = asyncio.get_running_loop()
        quiet = loop.time() - self._heard
        if quiet < timeout:
            self._timer = loop.call_later(timeout - quiet, self._silence_check, waiter, timeout)
        else:
            self._timer = None
            _expire(waiter)

    def _body(self, data: bytes) -> None:
        if self._chunked:
            self._current.append(data)
            return
        self._parts.append(data)
        self._buffered += len(data)
        self._wake()

    def _chunk_complete(self) -> None:
        if self._current:
            part = self._current[0] if len(self._current) == 1 else b"".join(self._current)
            self._current.clear()
            if self.push is not None and not self._parts and self.push(part):
                if self._timer is not None:
                    self._heard = asyncio.get_running_loop().time()
                return
            self._parts.append(part)
            self._buffered += len(part)
            self._wake()

    def _fail(self, error: BaseException) -> None:
        # Raised once what arrived before the failure has been taken.
        if not self.complete and self._error is None:
            self._error = error
            self._wake()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(asyncio.TimeoutError())


class _Connection(asyncio.Protocol):
    """One keep-alive connection to an instance, one request at a time."""

    def __init__(self, pool: UpstreamPool, key: tuple[str, int]) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: UpstreamResponse | None = None
        self.answered = False  # some byte of the current answer has arrived
        self.closed = False
        self.paused = False
        self.idle_timer: asyncio.TimerHandle | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._head: asyncio.Future[UpstreamResponse] | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.answered = True
        if self.response is None:
            self._close()  # bytes nobody asked for: the connection is out of step
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._broken(UpstreamBroken(f"the container sent invalid HTTP ({error})"))
            self._close()
            return
        response = self.response
        if response is not None and response._buffered > _HIGH_WATER and not self.paused:
            self.paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]

    def eof_received(self) -> bool:
        # The instance closed its side: no request may be sent here any more, even before
        # connection_lost (which follows) has run.
        self.closed = True
        self.pool._forget(self)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool._forget(self)
        detail = f": {exc}" if exc else ""
        self._broken(UpstreamBroken(f"the container closed the connection{detail}"))

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        response = self.response
        if response is None:
            return
        response.status = self.parser.get_status_code()
        response.keep_alive = self.parser.should_keep_alive()
        headers = response.headers
        for raw_name, raw_value in self._headers:
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        self._headers = []
        response._chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        head = self._head
        if head is not None and not head.done():
            head.set_result(response)

    def on_body(self, body: bytes) -> None:
        if self.response is not None:
            self.response._body(body)

    def on_chunk_complete(self) -> None:
        if self.response is not None:
            self.response._chunk_complete()

    def on_message_complete(self) -> None:
        response = self.response
        if response is not None:
            response._chunk_complete()
            response.complete = True
            response._wake()

    # used by the pool and the response

    async def send(
        self, request: bytes, timeout: float | None, sent: Callable[[], None] | None
    ) -> UpstreamResponse:
        if self.closed or self.transport is None or self.transport.is_closing():
            # Closed between the pool handing it out and now: nothing was sent.
            raise UpstreamBroken("the connection closed before the request was sent")
        loop = asyncio.get_running_loop()
        self.response = UpstreamResponse(self)
        self.answered = False
        self._head = head = loop.create_future()
        self.transport.write(request)
        if sent is not None:
            sent()
        timer = None if timeout is None else loop.call_later(timeout, _expire, head)
        try:
            return await head
        except BaseException:
            self._close()
            raise
        finally:
            self._head = None
            if timer is not None:
                timer.cancel()

    def resume(self) -> None:
        if self.paused and not self.closed:
            self.paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]

    def finish(self, response: UpstreamResponse, *, reusable: bool) -> None:
        if self.response is not response:
            return
        self.response = None
        if reusable and not self.closed:
            self.resume()
            self.pool._park(self)
        else:
            self._close()

    def _broken(self, error: UpstreamBroken) -> None:
        head = self._head
        if head is not None and not head.done():
            head.set_exception(error)
        if self.response is not None:
            self.response._fail(error)

    def _close(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool._forget(self)
            if self.transport is not None:
                self.transport.close()


class UpstreamPool:
    """Keep-alive connections to the instances, by (host, port)."""

    def __init__(self, *, connect_timeout: float = 5.0, keepalive: float = 4.0) -> None:
        # keepalive stays under uvicorn's 5 s, so the instance rarely closes one first.
        self.connect_timeout = connect_timeout
        self.keepalive = keepalive
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._all: set[_Connection] = set()

    async def post(
        self,
        host: str,
        port: int,
        path: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        *,
        timeout: float | None,
        sent: Callable[[], None] | None = None,
    ) -> UpstreamResponse:
        """Send a POST and return the answer once its headers are in (`timeout` bounds that
        wait); `sent` is called as soon as the request is written, before that wait. Raises
        `ConnectFailed` (nothing sent), `UpstreamBroken` or `TimeoutError`."""
        head = [
            b"POST %s HTTP/1.1\r\nhost: %s:%d\r\ncontent-length: %d\r\n"
            % (path.encode(), host.encode(), port, len(body))
        ]
        for name, value in headers:
            if b"\r" in value or b"\n" in value:
                raise ValueError(f"header {name!r} holds a line break")
            head.append(b"%s: %s\r\n" % (name, value))
        head.append(b"\r\n")
        request = b"".join(head) + body
        key = (host, port)
        while True:
            connection = self._take(key)
            reused = connection is not None
            if connection is None:
                connection = await self._connect(key)
            try:
                return await connection.send(request, timeout, sent)
            except UpstreamBroken:
                if reused and not connection.answered:
                    continue  # closed by the instance while idle: it never saw this request
                raise

    async def close(self) -> None:
        """Close every connection."""
        for connection in list(self._all):
            connection._close()
        self._idle.clear()

    def _take(self, key: tuple[str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            if connection.idle_timer is not None:
                connection.idle_timer.cancel()
                connection.idle_timer = None
            if not connection.closed:
                return connection
        return None

    async def _connect(self, key: tuple[str, int]) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(self, key), *key),
                self.connect_timeout,
            )
        except (OSError, asyncio.TimeoutError) as error:
            raise ConnectFailed(
                f"cannot connect to {key[0]}:{key[1]}: {error or 'timed out'}"
            ) from None
        self._all.add(connection)
        return connection

    def _park(self, connection: _Connection) -> None:
        loop = asyncio.get_running_loop()
        connection.idle_timer = loop.call_later(self.keepalive, connection._close)
        self._idle.setdefault(connection.key, []).append(connection)

    def _forget(self, connection: _Connection) -> None:
        self._all.discard(connection)
        if connection.idle_timer is not None:
            connection.idle_timer.cancel()
            connection.idle_timer = None
        idle = self._idle.get(connection.key)
        if idle and connection in idle:
            idle.remove(connection)

    def stats(self) -> dict[str, Any]:
        """Open and idle connection counts (for tests and leak checks)."""
        return {"open": len(self._all), "idle": sum(len(v) for v in self._idle.values())}
