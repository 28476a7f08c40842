"""AWS's own client of InvokeEndpointWithBidirectionalStream, driven for the tests.

Runs under Python >= 3.12 in its own environment (`make test` makes `.venv-aws` with
aws-sdk-sagemaker-runtime-http2 and awscrt); the tests start it as a process:

    python aws_bidi_client.py SCENARIO URL ENDPOINT CA_FILE ACCESS_KEY SECRET [ARG]

and read one JSON document from its standard output. Nothing here is streamhost's: the
client is AWS's, used as its samples use it, with its CRT transport (the only one that
streams both ways). The one thing set by hand is the CRT's trust store, which the client
offers no option for: the test CA is trusted for the gateway's certificate.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from aws_sdk_sagemaker_runtime_http2.client import AsyncSageMakerRuntimeHTTP2Client
from aws_sdk_sagemaker_runtime_http2.config import AsyncSageMakerRuntimeHTTP2Config
from aws_sdk_sagemaker_runtime_http2.models import (
    InternalStreamFailure,
    InvokeEndpointWithBidirectionalStreamInput,
    ModelStreamError,
    RequestPayloadPart,
    RequestStreamEventPayloadPart,
    ResponseStreamEventInternalStreamFailure,
    ResponseStreamEventModelStreamError,
    ResponseStreamEventPayloadPart,
)
from awscrt import io as crt_io
from smithy_aws_core.identity import AWSCredentialsIdentity
from smithy_aws_core.identity.static import StaticCredentialsResolver
from smithy_http.aio.crt import AWSCRTHTTPClient

SCENARIO, URL, ENDPOINT, CA_FILE, ACCESS_KEY, SECRET = sys.argv[1:7]
ARG = sys.argv[7] if len(sys.argv) > 7 else ""


def transport() -> AWSCRTHTTPClient:
    client = AWSCRTHTTPClient()
    options = crt_io.TlsContextOptions()
    options.override_default_trust_store_from_path(None, CA_FILE)
    client._tls_ctx = crt_io.ClientTlsContext(options)
    return client


async def client(secret: str = SECRET) -> AsyncSageMakerRuntimeHTTP2Client:
    config = await AsyncSageMakerRuntimeHTTP2Config.resolve(
        endpoint_uri=URL,
        region="us-east-1",
        aws_credentials_identity_resolver=StaticCredentialsResolver(
            AWSCredentialsIdentity(access_key_id=ACCESS_KEY, secret_access_key=secret)
        ),
    )
    config.transport = transport()
    return AsyncSageMakerRuntimeHTTP2Client(config=config)


def part(data: bytes, data_type: str = "UTF8", state: str = "COMPLETE") -> Any:
    return RequestStreamEventPayloadPart(
        value=RequestPayloadPart(bytes_=data, data_type=data_type, completion_state=state)
    )


def turn(text: str, tokens: int = 8) -> bytes:
    return json.dumps({"inputs": text, "parameters": {"max_new_tokens": tokens}}).encode()


class Conversation:
    """One bidirectional stream: send parts, read the answer's parts."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.output: Any = None

    @classmethod
    async def open(cls, **extra: Any) -> Conversation:
        smr = await client(**extra)
        stream = await smr.invoke_endpoint_with_bidirectional_stream(
            InvokeEndpointWithBidirectionalStreamInput(endpoint_name=ENDPOINT)
        )
        return cls(stream)

    async def send(self, data: bytes, data_type: str = "UTF8", state: str = "COMPLETE") -> None:
        await self.stream.input_stream.send(part(data, data_type, state))

    async def receive(self) -> dict[str, Any] | None:
        """The next event as a document (None: the stream ended)."""
        if self.output is None:
            response, self.output = await self.stream.await_output()
            self.variant = response.invoked_production_variant
        try:
            event = await self.output.receive()
        except ModelStreamError as error:  # the stream's modelled errors are raised
            return {"error": "ModelStreamError", "code": error.error_code, "message": str(error)}
        except InternalStreamFailure as error:
            return {"error": "InternalStreamFailure", "message": str(error)}
        if event is None:
            return None
        if isinstance(event, ResponseStreamEventPayloadPart):
            value = event.value
            return {
                "data": (value.bytes_ or b"").decode("utf-8", "replace"),
                "type": value.data_type,
                "state": value.completion_state,
            }
        if isinstance(event, ResponseStreamEventModelStreamError):
            return {
                "error": "ModelStreamError",
                "code": event.value.error_code,
                "message": event.value.message,
            }
        if isinstance(event, ResponseStreamEventInternalStreamFailure):
            return {"error": "InternalStreamFailure", "message": event.value.message}
        return {"error": type(event).__name__}

    async def answer(self) -> list[dict[str, Any]]:
        """The parts of one answer, up to its COMPLETE part (or an error, or the end)."""
        parts = []
        while True:
            event = await self.receive()
            if event is None:
                return parts
            parts.append(event)
            if "error" in event or event["state"] == "COMPLETE":
                return parts

    async def until_error(self) -> list[dict[str, Any]]:
        """The events up to the stream's end or its first error."""
        events = []
        while (event := await self.receive()) is not None:
            events.append(event)
            if "error" in event:
                break
        return events

    async def close(self) -> list[dict[str, Any]]:
        """End the input; the events that still came."""
        await self.stream.input_stream.close()
        rest = []
        while (event := await self.receive()) is not None:
            rest.append(event)
        return rest


async def conversation() -> dict[str, Any]:
    """Turns on one stream; each answer's parts, and the turn latencies."""
    talk = await Conversation.open()
    answers, latencies = [], []
    for text in json.loads(ARG or '["Hello", " and then", " once more"]'):
        sent = time.perf_counter()
        await talk.send(turn(text))
        parts = await talk.answer()
        latencies.append(time.perf_counter() - sent)
        answers.append(parts)
    rest = await talk.close()
    return {"answers": answers, "rest": rest, "variant": talk.variant, "latencies": latencies}


async def interrupt() -> dict[str, Any]:
    """A long answer interrupted after its first parts, then another turn."""
    talk = await Conversation.open()
    await talk.send(turn("Tell me everything", 2000))
    first = [await talk.receive() for _ in range(3)]
    await talk.send(b'{"requestType": "INTERRUPT"}')
    cut = first + await talk.answer()
    await talk.send(turn("Short", 3))
    after = await talk.answer()
    return {"interrupted": cut, "after": after, "rest": await talk.close()}


async def split() -> dict[str, Any]:
    """One turn sent as many PARTIAL parts and a COMPLETE one; then a BINARY turn."""
    talk = await Conversation.open()
    body = turn("Hello there, in pieces", 4)
    pieces = [body[i : i + 3] for i in range(0, len(body), 3)]
    for piece in pieces[:-1]:
        await talk.send(piece, state="PARTIAL")
    await talk.send(pieces[-1], state="COMPLETE")
    first = await talk.answer()
    await talk.send(turn("Bytes", 3), data_type="BINARY")
    second = await talk.answer()
    return {"pieces": len(pieces), "answer": first, "binary": second, "rest": await talk.close()}


async def forged() -> dict[str, Any]:
    """The events signed with the wrong secret (the request itself is signed right)."""
    talk = await Conversation.open()
    signing = talk.stream.input_stream._signing_config

    class WrongSecret:
        async def get_identity(self, *, properties: Any) -> Any:
            return AWSCredentialsIdentity(access_key_id=ACCESS_KEY, secret_access_key="forged")

    signing.identity_resolver = WrongSecret()
    await talk.send(turn("Hello"))
    return {"events": await talk.until_error()}


async def replayed() -> dict[str, Any]:
    """One signed event written twice: the copy is out of the signature chain."""
    talk = await Conversation.open()
    publisher = talk.stream.input_stream
    writer = publisher._writer
    original = writer.write

    async def twice(data: bytes) -> None:
        await original(data)
        await original(data)

    writer.write = twice
    await talk.send(turn("Hello", 3))
    return {"events": await talk.until_error()}


async def slow_reader() -> dict[str, Any]:
    """A long answer read slowly: every part arrives, in order."""
    talk = await Conversation.open()
    await talk.send(turn("Hello", int(ARG or 64)))
    parts = []
    while True:
        event = await talk.receive()
        parts.append(event)
        await asyncio.sleep(0.02)
        if event is None or "error" in event or event["state"] == "COMPLETE":
            break
    return {"answer": parts, "rest": await talk.close()}


async def until_broken() -> dict[str, Any]:
    """A long answer; the test kills the instance meanwhile (it waits for "started")."""
    talk = await Conversation.open()
    await talk.send(turn("Hello", 100000))
    first = await talk.receive()
    print(json.dumps({"started": first}), flush=True)
    events = []
    while (event := await talk.receive()) is not None:
        events.append(event)
        if "error" in event:
            break
    return {"events": events[-3:]}


async def many() -> dict[str, Any]:
    """N streams at once, each two turns: every answer whole, in order, its own."""
    count = int(ARG or 100)

    async def one(index: int) -> list[str]:
        talk = await Conversation.open()
        texts = []
        for number in range(2):
            await talk.send(turn(f"stream {index} turn {number}", 6))
            parts = await talk.answer()
            if any("error" in p for p in parts):
                raise RuntimeError(f"stream {index}: {parts}")
            texts.append("".join(p["data"] for p in parts))
        await talk.close()
        return texts

    started = time.perf_counter()
    results = await asyncio.gather(*(one(i) for i in range(count)), return_exceptions=True)
    failures = [repr(r) for r in results if isinstance(r, BaseException)]
    return {
        "answers": [r for r in results if not isinstance(r, BaseException)],
        "failures": failures[:5],
        "seconds": time.perf_counter() - started,
    }


async def refused() -> dict[str, Any]:
    """A request signed with the wrong secret: refused before any event."""
    try:
        talk = await Conversation.open(secret="wrong")
        await talk.send(turn("Hello"))
        event = await talk.receive()
        return {"event": event}
    except Exception as error:
        return {"error": type(error).__name__, "message": str(error)[:500]}


SCENARIOS = {
    "conversation": conversation,
    "interrupt": interrupt,
    "split": split,
    "forged": forged,
    "replayed": replayed,
    "slow_reader": slow_reader,
    "until_broken": until_broken,
    "many": many,
    "refused": refused,
}

if __name__ == "__main__":
    result = asyncio.run(SCENARIOS[SCENARIO]())
    print(json.dumps(result), flush=True)
