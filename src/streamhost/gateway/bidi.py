"""`InvokeEndpointWithBidirectionalStream`: the relay between a client's event stream and
an instance's WebSocket.

The client's request body is a stream of event-stream messages: each `PayloadPart`
(headers `DataType` `UTF8` | `BINARY`, `CompletionState` `PARTIAL` | `COMPLETE`) wrapped, as
AWS's clients sign them, in an outer message with `:date` and `:chunk-signature` (checked
one by one by `sigv4.EventChain`); an outer message with an empty payload ends the input.
Each part goes to the instance's WebSocket (`/invocations-bidirectional-stream`) as a frame:
`UTF8` a text frame, `BINARY` (or no `DataType`) a binary one, `PARTIAL` without FIN (the
message goes on), `COMPLETE` with it. Each frame the instance sends comes back as a
`PayloadPart` the same way, one event per frame, written as it arrives.

The instance is the router's choice, held for the stream's life. Either side's end ends the
other: the input's end closes the WebSocket (close code 1000), and the instance's close ends
the response (code 1000: a normal end). A broken instance connection, or another close code,
ends the response with `ModelStreamError` (`StreamBroken`; the instance is marked down, unless
the fleet stopped it: a stream holds its instance's slot, so scale-in and updates drain it
up to their bound, then stop the instance); a stream past `stream_timeout`, or an
instance silent for `idle_timeout` after the client's last message, with `ModelStreamError`
(`ModelInvocationTimeExceeded`; a client that stops reading is dropped at the deadline);
an event that is malformed or not signed right, with `ModelStreamError` too (the union's one
error at the client's fault; its `ErrorCode` says what was wrong with the event).

The WebSocket is websockets' sans-I/O protocol on an asyncio transport, which gives each
frame with its FIN bit (the asyncio API joins fragments before handing them over).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from botocore.eventstream import EventStreamBuffer, ParserError
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidHandshake
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

from streamhost.client.eventencode import (
    MODEL_INVOCATION_TIME_EXCEEDED,
    STREAM_BROKEN,
    model_stream_error,
    stream_part,
)

from . import errors
from .router import Instance
from .sigv4 import EventChain, SigV4Error

log = logging.getLogger("streamhost.gateway")

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

PATH = "/invocations-bidirectional-stream"
_HIGH_WATER = 64  # frames queued for a slow client before the instance is paused
_LOW_WATER = 16
_CONNECT_ATTEMPTS = 3
_DRAIN = 5.0  # seconds for the client to end its body after the answer stream ended


class InputRejected(Exception):
    """An input event that is malformed or not signed right (the stream ends with it)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class InputEvents:
    """The client's event stream, decoded: `feed` bytes, get (payload, text, complete) for
    each `PayloadPart`, in order; `ended` once the last (empty) signed event came."""

    def __init__(self, chain: EventChain | None) -> None:
        self._chain = chain
        self._outer = EventStreamBuffer()
        self.ended = False

    def feed(self, data: bytes) -> list[tuple[bytes, bool, bool]]:
        if self.ended:
            if data:
                raise InputRejected("InputAfterEnd", "Events came after the stream's last one.")
            return []
        self._outer.add_data(data)
        parts = []
        try:
            for message in self._outer:
                part = self._open(message.headers, message.payload)
                if part is None:
                    self.ended = True
                    break
                parts.append(part)
        except ParserError as error:
            raise InputRejected(
                "MalformedEvent", f"A malformed event-stream message: {error}"
            ) from None
        return parts

    def _open(self, headers: dict[str, Any], payload: bytes) -> tuple[bytes, bool, bool] | None:
        signature = headers.get(":chunk-signature")
        if signature is not None or self._chain is not None:
            date = headers.get(":date")
            if not isinstance(signature, bytes) or not isinstance(date, int):
                raise InputRejected(
                    "MissingSignature",
                    "Each event must be signed (:date and :chunk-signature headers).",
                )
            if self._chain is not None:
                try:
                    self._chain.verify(date, signature, payload)
                except SigV4Error as error:
                    raise InputRejected(error.code, error.message) from None
            if not payload:
                return None  # the signed end of the stream
            inner = EventStreamBuffer()
            inner.add_data(payload)
            events = list(inner)
            if len(events) != 1:
                raise InputRejected("MalformedEvent", "A signed event must wrap one message.")
            headers, payload = events[0].headers, events[0].payload
        if headers.get(":message-type", "event") != "event" or (
            headers.get(":event-type") != "PayloadPart"
        ):
            raise InputRejected(
                "UnknownEvent",
                f"Only PayloadPart events are accepted, not {headers.get(':event-type')!r}.",
            )
        data_type = headers.get("DataType", "BINARY")
        state = headers.get("CompletionState", "COMPLETE")
        if data_type not in ("UTF8", "BINARY") or state not in ("PARTIAL", "COMPLETE"):
            raise InputRejected(
                "InvalidEventHeader",
                "DataType must be UTF8 or BINARY and CompletionState PARTIAL or COMPLETE.",
            )
        return payload, data_type == "UTF8", state == "COMPLETE"


class InstanceSocket(asyncio.Protocol):
    """A WebSocket to one instance: frames out (`send_part`), frames in (`frames`), each
    data frame with its FIN bit; pings are answered by the protocol."""

    def __init__(self, instance: Instance, uri: str, headers: list[tuple[str, str]]) -> None:
        self.instance = instance
        self.protocol = ClientProtocol(parse_uri(uri), max_size=None)
        self._request = self.protocol.connect()
        for name, value in headers:
            self._request.headers[name] = value
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.frames: collections.deque[Frame] = collections.deque()
        self.closed: BaseException | None = None  # why the connection ended (None: open)
        self._waiter: asyncio.Future[None] | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._paused = False
        self._open_message = False  # an outgoing message sent in parts is unfinished
        self.transport: asyncio.Transport | None = None

    # -- asyncio ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.protocol.send_request(self._request)
        self._flush()

    def data_received(self, data: bytes) -> None:
        self.protocol.receive_data(data)
        self._take_events()

    def eof_received(self) -> bool:
        self.protocol.receive_eof()
        self._take_events()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed is None:
            self.closed = ConnectionError(str(exc) if exc else "the instance closed it")
        if not self.opened.done():
            self.opened.set_exception(self.closed)
        self._writable.set()
        self._wake()

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # -- frames -------------------------------------------------------------------------

    def _take_events(self) -> None:
        for event in self.protocol.events_received():
            if isinstance(event, Response):
                if self.protocol.handshake_exc is not None:
                    self.opened.set_exception(self.protocol.handshake_exc)
                elif not self.opened.done():
                    self.opened.set_result(None)
            elif event.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
                self.frames.append(event)
                if len(self.frames) >= _HIGH_WATER and not self._paused:
                    self._paused = True
                    assert self.transport is not None
                    self.transport.pause_reading()
            elif event.opcode is Opcode.CLOSE and self.closed is None:
                received = self.protocol.close_rcvd
                self.closed = _Closed(received.code if received is not None else 1005)
        self._flush()
        if self.protocol.close_expected() and self.transport is not None:
            self.transport.close()
        self._wake()

    def _flush(self) -> None:
        data = self.protocol.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(data))

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self, timeout: float | None) -> None:
        """Until a frame is queued or the connection ended (asyncio.TimeoutError after
        `timeout` seconds)."""
        if self.frames or self.closed is not None:
            return
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(self._waiter, timeout)
        finally:
            self._waiter = None

    def take(self) -> list[Frame]:
        """The frames queued, in order; reading resumes once few are left."""
        frames = list(self.frames)
        self.frames.clear()
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return frames

    async def send_part(self, data: bytes, text: bool, complete: bool) -> None:
        """One part of a message (the last if `complete`), waiting while the socket's
        buffer is full."""
        await self._writable.wait()
        if self.closed is not None:
            raise ConnectionError("the instance closed the connection")
        if self._open_message:
            self.protocol.send_continuation(data, fin=complete)
        elif text:
            self.protocol.send_text(data, fin=complete)
        else:
            self.protocol.send_binary(data, fin=complete)
        self._open_message = not complete
        self._flush()

    def close(self) -> None:
        """Say goodbye (close code 1000); the transport closes once the instance answers,
        or at once if the connection is already gone."""
        if self.transport is None or self.transport.is_closing():
            return
        if self.closed is None and self.protocol.state is State.OPEN:
            self.protocol.send_close(1000)
            self._flush()
            asyncio.get_running_loop().call_later(2.0, self.transport.close)
        else:  # not open yet (a refused handshake), or already closed by the instance
            self.transport.close()


class _Closed(ConnectionError):
    """The instance closed the WebSocket, with this close code (1000: the conversation is
    over, not an error of the stream)."""

    def __init__(self, code: int) -> None:
        super().__init__(f"the container closed the WebSocket with code {code}")
        self.code = code


def part_event(frame: Frame, text: bool) -> bytes:
    """The `PayloadPart` of one frame from the instance (`text`: its message is text)."""
    return stream_part(bytes(frame.data), text, frame.fin)


async def relay(
    plane: Any,
    receive: Receive,
    send: Send,
    endpoint: str,
    headers: dict[str, str],
    chain: EventChain | None,
    request_id: str,
) -> None:
    """Serve one bidirectional stream (see the module's doc); `plane` is the runtime
    plane, whose router, settings and error wording it uses."""
    instance, socket = await _connect(plane, endpoint, headers)
    loop = asyncio.get_running_loop()
    try:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/vnd.amazon.eventstream"),
                    (b"x-amzn-invoked-production-variant", instance.variant.encode()),
                    (b"x-amzn-requestid", request_id.encode()),
                    (b"cache-control", b"no-cache"),
                    (b"x-accel-buffering", b"no"),
                ],
            }
        )
        state = _State()
        reader = loop.create_task(_forward_input(receive, socket, chain, state))
        try:
            tail = await _forward_output(socket, send, state, plane, endpoint)
            if tail is None and state.rejected is not None:
                # The response stream's union has two errors: ModelStreamError is the one
                # at the client's fault, and AWS's client cannot read any other type.
                tail = model_stream_error(state.rejected.code, str(state.rejected))
            if tail is not None and not state.gone:
                await send({"type": "http.response.body", "body": tail, "more_body": True})
            # The request's body ends first (the client's end of the input follows its
            # last event at once; after an error it is given a moment to stop sending).
            await asyncio.wait({reader}, timeout=_DRAIN)
        finally:
            reader.cancel()
            try:
                await reader
            except (asyncio.CancelledError, Exception):
                pass
        if not state.gone:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        socket.close()
        plane.router.release(instance)


class _State:
    __slots__ = ("awaiting", "gone", "input_ended", "rejected")

    def __init__(self) -> None:
        self.awaiting: float | None = None  # when the client's last message ended, unanswered
        self.input_ended = False
        self.gone = False  # the client left
        self.rejected: InputRejected | None = None


async def _forward_input(
    receive: Receive, socket: InstanceSocket, chain: EventChain | None, state: _State
) -> None:
    """The client's events to the instance until the input ends (the WebSocket is then
    closed, which ends the output) or is rejected; then the rest of the body is read and
    dropped until the client ends it, so that the response never ends before the request
    (an HTTP/2 stream gets no DATA after its response ended)."""
    events = InputEvents(chain)
    forwarding = True
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                state.gone = True
                return
            if forwarding:
                try:
                    for data, text, complete in events.feed(message.get("body", b"")):
                        await socket.send_part(data, text, complete)
                        if complete:
                            state.awaiting = time.monotonic()
                except InputRejected as error:
                    state.rejected = error
                    forwarding = False
                except ConnectionError:
                    forwarding = False  # the output side reports the broken connection
                if events.ended or not forwarding:
                    forwarding = False
                    state.input_ended = True
                    socket.close()
            if not message.get("more_body", False):
                return
    finally:
        state.input_ended = True
        socket.close()
        socket._wake()


async def _forward_output(
    socket: InstanceSocket, send: Send, state: _State, plane: Any, endpoint: str
) -> bytes | None:
    """The instance's frames to the client until it closes; the stream's last event if it
    ended badly (None: it ended well, or the client is gone)."""
    settings = plane.settings
    deadline = time.monotonic() + settings.stream_timeout
    text = False  # the type of the message the instance is sending
    while True:
        now = time.monotonic()
        if now >= deadline:
            return model_stream_error(
                MODEL_INVOCATION_TIME_EXCEEDED,
                f"The stream ran past its {settings.stream_timeout:g} seconds.",
            )
        if state.awaiting is not None and now - state.awaiting >= settings.idle_timeout:
            return model_stream_error(
                MODEL_INVOCATION_TIME_EXCEEDED,
                f"The model sent nothing for {settings.idle_timeout:g} seconds after the "
                "client's last message.",
            )
        try:
            await socket.wait(1.0)
        except asyncio.TimeoutError:
            continue
        frames = socket.take()
        if frames:
            state.awaiting = None
            # One event per frame; the frames that came while the last send waited go out
            # in one write.
            events = []
            for frame in frames:
                if frame.opcode is not Opcode.CONT:
                    text = frame.opcode is Opcode.TEXT
                events.append(part_event(frame, text))
            message = {"type": "http.response.body", "body": b"".join(events), "more_body": True}
            try:
                # A client that stops reading is waited for until the stream's time is up.
                await asyncio.wait_for(send(message), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                state.gone = True  # nothing more can reach it: the connection is dropped
                log.warning(
                    "a client of endpoint %s read nothing until the stream's %gs ran out; "
                    "closing its stream",
                    endpoint,
                    settings.stream_timeout,
                )
                return None
        if socket.closed is not None and not socket.frames:
            if state.gone:
                return None
            closed = socket.closed
            if state.input_ended or (isinstance(closed, _Closed) and closed.code == 1000):
                return None
            if socket.instance.gone:
                why = (
                    f"the instance of endpoint {endpoint} serving it was stopped (the endpoint "
                    "was updated or scaled in) once the drain bound passed"
                )
            else:
                plane.router.mark_down(socket.instance)
                why = f"the connection to the container of endpoint {endpoint} closed ({closed})"
            return model_stream_error(STREAM_BROKEN, f"The model's stream was broken: {why}.")


async def _connect(
    plane: Any, endpoint: str, headers: dict[str, str]
) -> tuple[Instance, InstanceSocket]:
    """The router's instance and an open WebSocket to it; an instance that refuses the
    connection is marked down and another tried."""
    path = headers.get("x-amzn-sagemaker-model-invocation-path") or PATH.lstrip("/")
    query = headers.get("x-amzn-sagemaker-model-query-string")
    target = "/" + quote(path.lstrip("/"), safe="/-_.~") + (f"?{query}" if query else "")
    target_variant = headers.get("x-amzn-sagemaker-target-variant") or None
    tried: list[Instance] = []
    loop = asyncio.get_running_loop()
    for _ in range(_CONNECT_ATTEMPTS):
        instance = plane._choose(endpoint, target_variant, None, tried)
        socket = InstanceSocket(
            instance,
            f"ws://{instance.host}:{instance.port}{target}",
            [("x-streamhost-instance-secret", instance.secret)],
        )
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda s=socket: s, instance.host, instance.port),
                plane.settings.connect_timeout,
            )
            await asyncio.wait_for(socket.opened, plane.settings.connect_timeout)
        except InvalidHandshake as error:
            plane.router.release(instance)
            socket.close()
            raise errors.invalid_runtime_input(
                f"The container of endpoint {endpoint} refused the bidirectional stream at "
                f"{target} ({error}); its image must serve a WebSocket there."
            ) from None
        except (OSError, asyncio.TimeoutError):
            plane.router.release(instance)
            plane.router.mark_down(instance)
            socket.close()
            tried.append(instance)
            continue
        except BaseException:
            plane.router.release(instance)
            socket.close()
            raise
        return instance, socket
    raise errors.service_unavailable(
        f"No instance of endpoint {endpoint} accepted the stream; try again."
    )
