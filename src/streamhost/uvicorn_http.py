"""Our code on uvicorn's internals, in one module: the HTTP/1.1 protocol both servers run.

The gateway and the model server each serve with uvicorn's httptools protocol plus two
things uvicorn lacks, added here by subclassing it (`http_protocol`, for
`uvicorn.Config(http=…)`):

- **Limits on a request's head**, as nginx's `large_client_header_buffers`: a URL over
  `MAX_URL_BYTES` is answered 414; a header field (name and value) over `MAX_FIELD_BYTES`,
  more than `MAX_HEADER_FIELDS` fields or more than `MAX_HEADER_BYTES` of them in all, 431.
  httptools buffers a header line until it ends, so the bytes a head has brought are counted
  as they are read: a head still unfinished once `MAX_HEADER_BYTES` more have come after the
  read it began in is refused there and then. Whatever a client sends, no more of a head is
  buffered than that bound and two reads (the one it began in and the one that took it
  over; asyncio and uvloop read at most 256 KiB at a time).
- **A deadline for sending a request** (`request_timeout`), as nginx's
  `client_header_timeout` and `client_body_timeout`: a new connection must bring its first
  request, and every request must arrive whole, within it. A request that has begun is then
  answered 408; a connection that sent nothing is closed. Each connection is looked at every
  `request_timeout / 4` seconds, and a request found unfinished at five looks in a row —
  between the timeout and 1.25 × it after its first byte — has run out of time. The clock
  does not run while the server itself holds the request back (reading paused, or the
  request pipelined behind another). Idle keep-alive connections are uvicorn's business.

Either refusal is answered by the protocol itself, before any app sees the request, in the
server's own error form (`answer`), and the connection is closed. An ordinary request pays
two callbacks passed through this subclass and a few comparisons: the head's fields are
looked at one by one only when its reads were large enough to break a limit, or it has more
fields than allowed.

`websocket_protocol` is uvicorn's sans-I/O WebSocket protocol with one addition: a
`websocket.send` that says `"more": True` leaves its message open, as `http.response.body`'s
`more_body` does, so the next sends go out as continuation frames of the same message
(RFC 6455 fragmentation) until one without `more`. ASGI otherwise sends whole messages only;
the model server streams an answer to a bidirectional-stream turn as one message, a
fragment per token event.

`send_now` runs uvicorn's ASGI `send` by hand (the gateway's relay writes a chunk from a
socket callback with it). `check_uvicorn` checks at start-up that the uvicorn installed
still has every attribute this module uses; pyproject.toml bounds uvicorn to the versions
tested.
"""

from __future__ import annotations

import asyncio
import http
import inspect
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any

__all__ = [
    "MAX_FIELD_BYTES",
    "MAX_HEADER_BYTES",
    "MAX_HEADER_FIELDS",
    "MAX_URL_BYTES",
    "HeaderFieldsTooLarge",
    "RequestRefused",
    "RequestTimedOut",
    "UriTooLong",
    "UvicornMismatch",
    "check_uvicorn",
    "error_response",
    "http_protocol",
    "send_now",
    "uvicorn_config",
    "websocket_protocol",
]

MAX_URL_BYTES = 16 * 1024
MAX_FIELD_BYTES = 16 * 1024  # one header field: its name and value
MAX_HEADER_FIELDS = 100  # as Apache's LimitRequestFields
MAX_HEADER_BYTES = 64 * 1024  # all header fields together
_LOOKS = 4  # looks per request timeout


# -- refusals -----------------------------------------------------------------------------


class RequestRefused(Exception):
    """A request the protocol answers itself, before any app sees it; `status` is the
    HTTP status and the message says why."""

    status = 400


class RequestTimedOut(RequestRefused):
    """The request did not arrive whole within the request timeout."""

    status = 408


class UriTooLong(RequestRefused):
    """The request's URL is over `MAX_URL_BYTES`."""

    status = 414


class HeaderFieldsTooLarge(RequestRefused):
    """A header field, or the header fields together, are over their limit."""

    status = 431


def error_response(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    """A whole HTTP/1.1 response that closes the connection: `status`, `headers`, `body`."""
    head = [b"HTTP/1.1 %d %s" % (status, http.HTTPStatus(status).phrase.encode())]
    head += [b"%s: %s" % (name, value) for name, value in headers]
    head += [b"content-length: %d" % len(body), b"connection: close"]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


Answer = Callable[[RequestRefused], bytes]


def http_protocol(request_timeout: float, answer: Answer) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with the head limits and the request deadline above, the
    refusals rendered by `answer` (a whole response, see `error_response`). Checks uvicorn
    first (`UvicornMismatch`)."""
    base = check_uvicorn()
    namespace = {"request_timeout": request_timeout, "answer": staticmethod(answer)}
    return type("HttpProtocol", (_HeadLimits, _Deadline, base), namespace)


def uvicorn_config(
    app: Any,
    host: str,
    port: int,
    *,
    request_timeout: float,
    answer: Answer,
    log_level: str = "info",
    **options: Any,
) -> Any:
    """uvicorn's configuration for either server: the protocol above (`http_protocol`), and
    no per-request work neither server needs (no access log, no X-Forwarded-* reading, no
    server header). `options` are the server's own (TLS, the graceful-shutdown time)."""
    import uvicorn

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        http=http_protocol(request_timeout, answer),
        ws=websocket_protocol(),
        **options,
    )


# -- the head limits ----------------------------------------------------------------------


class _HeadLimits:
    """Counts the bytes read while a request's head is unfinished, and checks the head's
    parts when those bytes could break a limit."""

    answer: Answer
    transport: asyncio.Transport
    scope: Any
    cycle: Any
    url: bytes
    headers: list[tuple[bytes, bytes]]
    _read = 0  # bytes in the latest read
    _head: object = None  # the request (scope) whose head a read ended in, if still unfinished
    _head_later = 0  # bytes read since that read, the head still unfinished

    def data_received(self, data: bytes) -> None:
        self._read = len(data)
        super().data_received(data)  # type: ignore[misc]
        scope, cycle = self.scope, self.cycle
        if scope is not None and (cycle is None or cycle.scope is not scope):
            self._head_unfinished(scope)  # (uvicorn makes a request's cycle once its head is in)

    def on_headers_complete(self) -> None:
        # The head is at most the read it came in, when it came in one: below one field's
        # limit, only the number of fields can be over.
        if (
            self._read > MAX_FIELD_BYTES
            or self._head is not None
            or len(self.headers) > MAX_HEADER_FIELDS
        ):
            self._head = None
            error = self._head_error(unfinished=False)
            if error is not None:
                self._refuse_head(error)
                raise error  # stops the parser: nothing more of this connection is read
        super().on_headers_complete()  # type: ignore[misc]

    def _head_unfinished(self, scope: object) -> None:
        """A read ended in the head of `scope`'s request: count the read if the head began
        in an earlier one (how much of that one was the head's is unknown), then check."""
        if self.transport.is_closing():
            return
        if self._head is scope:
            self._head_later += self._read
        else:
            self._head, self._head_later = scope, 0
        error = self._head_error(unfinished=True)
        if error is not None:
            self._refuse_head(error)

    def send_400_response(self, msg: str) -> None:
        # uvicorn answers 400 to the parser error a refusal raises: the refusal was the answer.
        if not self.transport.is_closing():
            super().send_400_response(msg)  # type: ignore[misc]

    def _refuse_head(self, error: RequestRefused) -> None:
        # Answered unless an earlier request on the connection is still being answered
        # (pipelined): the refusal would cut into its answer, or be taken for it.
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(self.answer(error))
        self.transport.close()

    def _head_error(self, *, unfinished: bool) -> RequestRefused | None:
        """What is wrong with the head parsed so far, if anything."""
        if len(self.url) > MAX_URL_BYTES:
            return UriTooLong(f"The request's URL exceeds {MAX_URL_BYTES} bytes.")
        if len(self.headers) > MAX_HEADER_FIELDS:
            return HeaderFieldsTooLarge(
                f"The request has more than {MAX_HEADER_FIELDS} header fields."
            )
        total = 0
        for name, value in self.headers:
            size = len(name) + len(value)
            if size > MAX_FIELD_BYTES:
                return HeaderFieldsTooLarge(
                    f"The request's header field {name[:64].decode('latin-1')!r} exceeds "
                    f"{MAX_FIELD_BYTES} bytes."
                )
            total += size
        if total > MAX_HEADER_BYTES or (unfinished and self._head_later > MAX_HEADER_BYTES):
            return HeaderFieldsTooLarge(
                f"The request's header fields exceed {MAX_HEADER_BYTES} bytes."
            )
        return None


# -- the request deadline -----------------------------------------------------------------


class _Deadline:
    """Looks at the connection every quarter of `request_timeout`; see the module's doc."""

    answer: Answer
    request_timeout: float
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    scope: Any
    cycle: Any
    flow: Any
    pipeline: Any
    timeout_keep_alive_task: Any

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._unfinished: object = None  # what the last look found unfinished
        self._looks = 0  # how many looks in a row found it
        self._look = self.loop.call_later(self.request_timeout / _LOOKS, self._check)

    def connection_lost(self, exc: Exception | None) -> None:
        self._look.cancel()
        super().connection_lost(exc)  # type: ignore[misc]

    def _check(self) -> None:
        if self.transport.is_closing():
            return
        unfinished = self._waiting_for()
        if unfinished is None or unfinished is not self._unfinished:
            self._unfinished, self._looks = unfinished, 0
        elif self._looks < _LOOKS - 1:
            self._looks += 1
        else:
            if unfinished is self.scope:  # a request has begun: it is answered
                error = RequestTimedOut(
                    f"The request did not arrive whole within {self.request_timeout:g} seconds."
                )
                self.transport.write(self.answer(error))
            self.transport.close()
            return
        self._look = self.loop.call_later(self.request_timeout / _LOOKS, self._check)

    def _waiting_for(self) -> object:
        """What the connection is waiting for its client to finish: the current request's
        scope (headers or body not all in), the connection (nothing sent), or the last
        cycle (bytes that began no request); None while nothing is owed or the server
        itself holds the request back."""
        scope, cycle = self.scope, self.cycle
        if scope is None:
            return self  # no request yet
        if self.flow.read_paused or self.pipeline:
            return None  # reading is ours to resume; a request waits behind another
        if cycle is None or cycle.scope is not scope:  # its headers are not all in
            return scope if cycle is None or cycle.response_complete else None
        if cycle.more_body and not cycle.response_started:
            return scope  # its body is not all in, and it has no answer yet
        if cycle.response_complete and self.timeout_keep_alive_task is None:
            return cycle  # bytes came after the answer (ending keep-alive), no request
        return None


# -- WebSocket messages sent in fragments -------------------------------------------------


def websocket_protocol() -> type[asyncio.Protocol]:
    """uvicorn's sans-I/O WebSocket protocol, taking `"more": True` on `websocket.send`
    (see the module's doc)."""
    try:
        from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
    except ImportError as error:
        raise UvicornMismatch(f"streamhost cannot serve WebSockets: {error}") from None
    return type("WebSocketProtocol", (_Fragments, WebSocketsSansIOProtocol), {})


class _Fragments:
    conn: Any
    transport: asyncio.Transport
    writable: asyncio.Event
    handshake_complete: bool
    close_sent: bool
    disconnected: bool
    _open_message = False  # a message sent with "more" is not finished yet

    async def send(self, message: Any) -> None:
        if message["type"] != "websocket.send" or not (message.get("more") or self._open_message):
            await super().send(message)  # type: ignore[misc]
            return
        await self.writable.wait()
        if self.disconnected or self.close_sent or not self.handshake_complete:
            await super().send(message)  # type: ignore[misc]  # uvicorn's own refusal
            return
        data = message.get("bytes")
        text = data is None
        payload = message["text"].encode() if text else data
        more = bool(message.get("more"))
        if self._open_message:
            self.conn.send_continuation(payload, fin=not more)
        elif text:
            self.conn.send_text(payload, fin=False)
        else:
            self.conn.send_binary(payload, fin=False)
        self._open_message = more
        self.transport.write(b"".join(self.conn.data_to_send()))


# -- the ASGI send, run by hand -----------------------------------------------------------


def send_now(send: Callable[[Any], Awaitable[None]], message: Any) -> Awaitable[None] | None:
    """Run an ASGI `send` here and now, outside the task that awaits it otherwise; None if
    it completed (uvicorn's send of a body chunk waits only while the client's socket is
    full), else an awaitable of the rest."""
    awaitable = send(message)
    step = getattr(awaitable, "send", None)
    if step is None:  # not a coroutine: awaited as it is
        return awaitable
    try:
        stopped_at = step(None)
    except StopIteration:
        return None
    return _rest(awaitable, stopped_at)  # type: ignore[arg-type]


@types.coroutine
def _rest(coroutine: Coroutine[Any, Any, None], stopped_at: Any) -> Generator[Any, Any, None]:
    """Await the rest of a coroutine that was started by hand and stopped at `stopped_at`
    (what it yields to the event loop): what `await` would have done from there."""
    while True:
        try:
            value = yield stopped_at
        except BaseException as error:  # cancelled, or closed
            try:
                stopped_at = coroutine.throw(error)
            except StopIteration:
                return
        else:
            try:
                stopped_at = coroutine.send(value)
            except StopIteration:
                return


# -- the start-up check -------------------------------------------------------------------


class UvicornMismatch(RuntimeError):
    """The uvicorn installed lacks something this module relies on (a one-line message)."""


# What this module uses of uvicorn, by owner: methods it overrides or calls, and attributes
# it reads, found among the names the code that sets them uses.
_METHODS = {
    "HttpToolsProtocol": (
        "connection_made",
        "connection_lost",
        "data_received",
        "on_message_begin",
        "on_headers_complete",
        "send_400_response",
    ),
}
_ATTRIBUTES = {
    ("HttpToolsProtocol", "__init__"): (
        "loop",
        "transport",
        "flow",
        "pipeline",
        "scope",
        "cycle",
        "timeout_keep_alive_task",
    ),
    ("HttpToolsProtocol", "on_message_begin"): ("url", "headers"),
    ("RequestResponseCycle", "__init__"): (
        "scope",
        "more_body",
        "response_started",
        "response_complete",
    ),
    ("FlowControl", "__init__"): ("read_paused",),
}


def check_uvicorn() -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol class, once it is checked to have all this module uses;
    else `UvicornMismatch`, naming the first thing missing."""
    try:
        import uvicorn
        from uvicorn.protocols.http import flow_control, httptools_impl
    except ImportError as error:
        raise UvicornMismatch(f"streamhost cannot serve HTTP: {error}") from None
    owners = {
        "HttpToolsProtocol": getattr(httptools_impl, "HttpToolsProtocol", None),
        "RequestResponseCycle": getattr(httptools_impl, "RequestResponseCycle", None),
        "FlowControl": getattr(flow_control, "FlowControl", None),
    }
    missing = [name for name, owner in owners.items() if owner is None]
    if missing:
        raise _mismatch(uvicorn.__version__, missing)
    missing = [
        f"{owner}.{method}"
        for owner, methods in _METHODS.items()
        for method in methods
        if not callable(getattr(owners[owner], method, None))
    ]
    for (owner, function), names in _ATTRIBUTES.items():
        code = getattr(getattr(owners[owner], function, None), "__code__", None)
        used = code.co_names if code is not None else ()
        missing += [f"{owner}.{name}" for name in names if name not in used]
    if not inspect.iscoroutinefunction(getattr(owners["RequestResponseCycle"], "send", None)):
        missing.append("RequestResponseCycle.send as a coroutine function")
    if missing:
        raise _mismatch(uvicorn.__version__, missing)
    return owners["HttpToolsProtocol"]  # type: ignore[return-value]


def _mismatch(version: str, missing: list[str]) -> UvicornMismatch:
    return UvicornMismatch(
        f"uvicorn {version} lacks {', '.join(missing)}, which streamhost's HTTP protocol "
        "relies on: install a uvicorn version that streamhost's pyproject.toml allows"
    )
