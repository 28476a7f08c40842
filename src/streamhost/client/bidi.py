"""A client of `InvokeEndpointWithBidirectionalStream`: send turns, read the answer's parts.

AWS's own client (``aws-sdk-sagemaker-runtime-http2``) needs Python 3.12 and an HTTP/2
connection; this one runs wherever streamhost does and speaks HTTP/1.1 with a chunked
request body (aiohttp), which the gateway serves on its usual port::

    from streamhost.client.bidi import open_bidi_stream

    async with await open_bidi_stream("default", "http://127.0.0.1:8080") as stream:
        await stream.send('{"inputs": "Hello", "parameters": {"max_new_tokens": 32}}')
        async for text in stream.answer_text():
            print(text, end="", flush=True)
        await stream.interrupt()  # barge in on the answer being generated

Each event is signed as AWS's clients sign them (`eventsign.EventSigner`), chained from the request's
SigV4 signature, with the credentials ``load_credentials`` finds. An answer arrives as
``PayloadPart`` events, one per token event of the container's API, its last one
``COMPLETE``; `answer_text` turns them into text with the same decoders as `stream_text`.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any
from urllib.parse import quote

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer

from streamhost.client.boto import load_credentials
from streamhost.client.errors import StreamError
from streamhost.client.eventencode import stream_part
from streamhost.client.eventsign import EVENT_STREAM_PAYLOAD, EventSigner
from streamhost.client.eventstream import error_of_message
from streamhost.client.stream import StreamDecoder

__all__ = ["BidiPart", "BidiStream", "open_bidi_stream"]

CONTENT_TYPE = "application/vnd.amazon.eventstream"
SERVICE = "sagemaker"


class BidiPart:
    """One `PayloadPart` of the answer: its bytes, text or binary, and whether it ends a
    message (`complete`)."""

    __slots__ = ("complete", "data", "text")

    def __init__(self, data: bytes, text: bool, complete: bool) -> None:
        self.data, self.text, self.complete = data, text, complete

    def __repr__(self) -> str:
        return f"BidiPart({self.data!r}, text={self.text}, complete={self.complete})"


class BidiStream:
    """An open bidirectional stream (from `open_bidi_stream`)."""

    def __init__(self, session: Any, signer: EventSigner | None) -> None:
        self._session = session
        self._signer = signer
        self._outgoing: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._request: asyncio.Task[Any] | None = None
        self._response: Any = None
        self._buffer = EventStreamBuffer()
        self._parts: list[BidiPart] = []
        self.variant: str | None = None
        self._ended = False

    async def __aenter__(self) -> BidiStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _body(self) -> AsyncIterator[bytes]:
        while True:
            data = await self._outgoing.get()
            if data is None:
                return
            yield data

    def _write(self, payload: bytes) -> None:
        if self._signer is not None:
            payload = self._signer.sign(payload)
        self._outgoing.put_nowait(payload)

    async def send(self, data: bytes | str, *, complete: bool = True) -> None:
        """Send one part of a message (`str`: text, `bytes`: binary); `complete`: it
        ends the message (a turn, for streamhost's model server)."""
        if self._ended:
            raise RuntimeError("the stream's input has ended")
        text = isinstance(data, str)
        raw = data.encode() if isinstance(data, str) else data
        self._write(stream_part(raw, text, complete))

    async def interrupt(self) -> None:
        """Ask the model server to stop the answer it is generating."""
        await self.send(json.dumps({"requestType": "INTERRUPT"}))

    async def end(self) -> None:
        """End the input (the signed empty event); the answer stream then ends too."""
        if self._ended:
            return
        self._ended = True
        if self._signer is not None:
            self._write(b"")
        self._outgoing.put_nowait(None)

    async def _started(self) -> Any:
        """The response, once its head came (a refusal raised as `StreamError`)."""
        if self._response is None:
            response = await self._request
            if response.status != 200:
                body = await response.text()
                response.close()
                raise StreamError(f"the gateway answered {response.status}: {body.strip()[:500]}")
            self._response = response
            self.variant = response.headers.get("x-amzn-invoked-production-variant")
        return self._response

    async def parts(self) -> AsyncIterator[BidiPart]:
        """The answer's parts as they arrive, until the stream ends; the stream's error
        (`ModelStreamError`, `InternalStreamFailure`, …) is raised in order."""
        await self._started()
        while True:
            while self._parts:
                yield self._parts.pop(0)
            chunk = await self._response.content.readany()
            if not chunk:
                return
            self._buffer.add_data(chunk)
            for message in self._buffer:
                self._parts.extend(_parts_of(message.headers, message.payload))

    async def answer(self) -> AsyncIterator[BidiPart]:
        """The parts of one message (an answer), up to its `COMPLETE` part."""
        async for part in self.parts():
            yield part
            if part.complete:
                return

    async def answer_text(self) -> AsyncIterator[str]:
        """The text of one answer: its token events (JSON lines) decoded as `stream_text`
        decodes an API's stream (TGI, LMI or OpenAI, detected from the first event)."""
        decoder = StreamDecoder("application/jsonlines")
        async for part in self.answer():
            for delta in decoder.feed(part.data):
                yield delta.text
        for delta in decoder.close():
            yield delta.text

    async def aclose(self) -> None:
        """End the input and close the connection."""
        await self.end()
        if self._response is not None:
            self._response.close()
        elif self._request is not None:
            self._request.cancel()
        await self._session.close()


def _parts_of(headers: dict[str, Any], payload: bytes) -> list[BidiPart]:
    error = error_of_message(headers, payload)
    if error is not None:
        raise error
    if headers.get(":event-type") != "PayloadPart":
        return []
    return [
        BidiPart(
            payload,
            headers.get("DataType") == "UTF8",
            headers.get("CompletionState", "COMPLETE") == "COMPLETE",
        )
    ]


async def open_bidi_stream(
    endpoint_name: str,
    endpoint_url: str,
    *,
    region: str = "us-east-1",
    credentials: tuple[str, str] | None = None,
    target_variant: str | None = None,
    ca_file: str | None = None,
    timeout: float = 30.0,
) -> BidiStream:
    """Open a bidirectional stream to `endpoint_name` at the gateway `endpoint_url`;
    `credentials` (access key id, secret) default to what `load_credentials` finds
    (None there: the gateway runs without authentication, nothing is signed); `ca_file`:
    the authority to trust for an https:// gateway (default: the system's)."""
    import aiohttp

    url = f"{endpoint_url.rstrip('/')}/endpoints/{quote(endpoint_name, safe='')}"
    url += "/invocations-bidirectional-stream"
    headers = {"Content-Type": CONTENT_TYPE}
    if target_variant:
        headers["X-Amzn-SageMaker-Target-Variant"] = target_variant
    if credentials is None:
        found = load_credentials()
        if found is not None:
            credentials = (found["aws_access_key_id"], found["aws_secret_access_key"])
    signer = None
    if credentials is not None:
        request = AWSRequest(
            "POST", url, headers={**headers, "X-Amz-Content-SHA256": EVENT_STREAM_PAYLOAD}
        )
        SigV4Auth(Credentials(*credentials), SERVICE, region).add_auth(request)
        headers = dict(request.headers.items())
        seed = headers["Authorization"].rsplit("Signature=", 1)[1]
        signer = EventSigner(credentials[0], credentials[1], region, seed)
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, connect=timeout))
    stream = BidiStream(session, signer)
    # aiohttp sends the request's head with the first part of its body: the answer's head
    # is awaited when the answer is first read (`parts`), not here.
    stream._request = asyncio.get_running_loop().create_task(
        session.post(
            url,
            data=stream._body(),
            headers=headers,
            chunked=True,
            ssl=ssl.create_default_context(cafile=ca_file) if ca_file else True,
        )
    )
    return stream
