"""The container side of SageMaker's bidirectional streaming: a WebSocket conversation.

SageMaker relays ``InvokeEndpointWithBidirectionalStream`` to a WebSocket at
``/invocations-bidirectional-stream`` on the container's port: each ``PayloadPart`` the
client sends arrives as a frame (``UTF8`` as text, ``BINARY`` as binary; a ``PARTIAL`` part
is a frame of a message that goes on, the ``COMPLETE`` part its last frame), and each frame
the container sends goes back as a ``PayloadPart`` the same way.

Here one connection is one conversation:

- **A turn** is one whole message (its fragments joined): a request body in the shape
  ``/invocations`` takes on this container (TGI ``{"inputs": …}``, LMI, OpenAI chat
  ``{"messages": […]}`` or completion ``{"prompt": …}``). It is answered as a stream,
  ``"stream"`` or not.
- **The answer** is one message sent in fragments: each stream event of the API (the JSON
  its streaming route sends, without the server-sent-event framing), followed by a newline,
  is a fragment of its own, sent as the engine makes it (a ``PARTIAL`` part); an empty last
  fragment ends the answer (the ``COMPLETE`` part). The fragments joined are JSON Lines.
- **History** stays on the server for the connection's life: each turn goes after the turns
  before it and their answers, as a stateful session's do, so a client sends its new turn
  only. An interrupted answer is not kept.
- **``{"requestType": "INTERRUPT"}``** stops the answer being generated (the engine drops
  the request at its next step) and ends it at once; turns sent while an answer runs wait
  for it. With no answer running it is a no-op.
- **A bad turn** (not JSON, invalid fields) is answered with the API's own error body as
  one whole message, and the conversation goes on.

Pings are answered with pongs by the WebSocket protocol itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import uuid
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from streamhost.server.guard import refusal
from streamhost.server.sessions import Session
from streamhost.server.state import CONVERSATION

PATH = "/invocations-bidirectional-stream"
INTERRUPT = "INTERRUPT"
_POLICY_VIOLATION = 1008


async def conversation(websocket: WebSocket) -> None:
    """One bidirectional stream: turns in, answers out (see the module's doc)."""
    if refusal(websocket) is not None:
        await websocket.close(_POLICY_VIOLATION, "this instance accepts its gateway only")
        return
    await websocket.accept()
    session = Session(id=str(uuid.uuid4()), expires_at=math.inf)
    turns: asyncio.Queue[Any] = asyncio.Queue()
    answering = asyncio.get_running_loop().create_task(_answer_turns(websocket, session, turns))
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if data is None:
                data = (message.get("text") or "").encode()
            if _is_interrupt(data):
                current = getattr(answering, "current", None)
                if current is not None:
                    current.cancel()
                continue
            turns.put_nowait(data)
    finally:
        answering.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await answering


def _is_interrupt(data: bytes) -> bool:
    if b"INTERRUPT" not in data:
        return False
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return isinstance(body, dict) and body.get("requestType") == INTERRUPT


async def _answer_turns(websocket: WebSocket, session: Session, turns: asyncio.Queue) -> None:
    task = asyncio.current_task()
    assert task is not None
    while True:
        data = await turns.get()
        turn = asyncio.get_running_loop().create_task(_answer(websocket, session, data))
        task.current = turn  # type: ignore[attr-defined]  # what INTERRUPT cancels
        try:
            await asyncio.shield(turn)
        except asyncio.CancelledError:
            if not turn.cancelled():
                turn.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await turn
                raise
        finally:
            task.current = None  # type: ignore[attr-defined]
        if turn.cancelled():  # interrupted: the answer ends here
            await websocket.send({"type": "websocket.send", "text": ""})


async def _answer(websocket: WebSocket, session: Session, data: bytes) -> None:
    """Answer one turn: its stream's events as fragments of one message, or one whole
    message with the error."""
    from streamhost.server.container import answer_turn

    response = await answer_turn(_turn_request(websocket, session, data))
    if not isinstance(response, StreamingResponse):
        await websocket.send({"type": "websocket.send", "text": _text(response)})
        return
    events = response.body_iterator
    try:
        async for chunk in events:
            for event in _events(chunk if isinstance(chunk, bytes) else chunk.encode()):
                await websocket.send(
                    {"type": "websocket.send", "text": event.decode() + "\n", "more": True}
                )
    finally:
        # Interrupted or not, the engine lets go of the request here (the stream's own
        # `finally` closes it).
        await events.aclose()  # type: ignore[attr-defined]
    await websocket.send({"type": "websocket.send", "text": ""})


def _turn_request(websocket: WebSocket, session: Session, data: bytes) -> Request:
    """The turn as an `/invocations` request of this connection's conversation."""
    body = _streamed(data)
    headers = [
        (name, value)
        for name, value in websocket.scope["headers"]
        if name not in (b"content-length", b"content-type")
    ]
    headers += [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    scope = {
        "type": "http",
        "asgi": websocket.scope.get("asgi", {}),
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/invocations",
        "raw_path": b"/invocations",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": websocket.scope.get("client"),
        "server": websocket.scope.get("server"),
        "app": websocket.scope["app"],
        "state": {},
        CONVERSATION: session,
    }
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.Event().wait()  # no disconnect: the turn lives as long as it runs
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(scope, receive)


def _streamed(data: bytes) -> bytes:
    """The turn's body, asking for a stream (left as it is if it is not a JSON object)."""
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        return data
    if not isinstance(body, dict) or "requestType" in body:
        return data
    body["stream"] = True
    return orjson.dumps(body)


def _events(chunk: bytes) -> list[bytes]:
    """The stream events in one chunk of a streaming route's body: server-sent events'
    data (keep-alive comments and OpenAI's ``[DONE]`` left out) or JSON lines."""
    events = []
    for raw in chunk.split(b"\n"):
        line = raw.strip()
        if not line or line.startswith(b":"):
            continue
        if line.startswith(b"data:"):
            line = line[5:].lstrip()
            if line == b"[DONE]":
                continue
        events.append(line)
    return events


def _text(response: Response) -> str:
    return bytes(response.body).decode("utf-8", errors="replace")


routes = [WebSocketRoute(PATH, conversation)]
