"""Asking an endpoint for an answer: the request body each API expects, the streamed answer
with its timings, and stateful sessions.

Timings follow the serving benchmarks' definitions: TTFT is the time from sending the
request to the first text; tokens/s is the decode speed, the tokens after the first per
second after the first (so it does not double-count TTFT).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from streamhost.client import StreamResult, stream_text

__all__ = [
    "AnswerTimes",
    "Completion",
    "Generation",
    "GenerationParameters",
    "close_session",
    "invoke",
    "open_session",
    "request_body",
    "start_generation",
]

Clock = Callable[[], float]


@dataclass(frozen=True)
class GenerationParameters:
    """The knobs the UI and ``streamhost invoke`` expose (the original sample's ranges);
    temperature 0 means greedy decoding, as it does for OpenAI, vLLM and TGI's chat route."""

    max_new_tokens: int = 400
    temperature: float = 0.1

    @property
    def greedy(self) -> bool:
        """Whether the answer is the most likely tokens, without sampling."""
        return self.temperature == 0


def request_body(
    api: str, prompt: str, parameters: GenerationParameters, *, stream: bool = True
) -> bytes:
    """The JSON body for ``prompt`` in the endpoint's API.

    TGI: ``{"inputs", "parameters", "stream"}`` answered with SSE token events. LMI:
    ``{"inputs", "parameters"}`` answered in the container's output format (JSON lines
    when deployed by streamhost); LMI samples only with ``do_sample``, so it is sent to make
    the temperature count. Temperature 0 is sent as ``do_sample: false`` and no
    temperature: TGI's ``/generate`` refuses 0 ("`temperature` must be strictly positive").
    vLLM's container: an OpenAI chat body (its ``/invocations`` takes nothing else).
    """
    if api == "vllm":
        chat: dict[str, Any] = {
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": parameters.max_new_tokens,
            "temperature": parameters.temperature,
            "stream": stream,
        }
        if stream:
            chat["stream_options"] = {"include_usage": True}
        return json.dumps(chat).encode()
    fields: dict[str, Any] = {"max_new_tokens": parameters.max_new_tokens}
    if parameters.greedy:
        fields["do_sample"] = False
    else:
        fields["temperature"] = parameters.temperature
    fields["return_full_text"] = False
    if api == "lmi":
        fields.setdefault("do_sample", True)
        return json.dumps({"inputs": prompt, "parameters": fields}).encode()
    if not stream:
        fields["details"] = True  # TGI counts the tokens of a whole answer only when asked
    return json.dumps({"inputs": prompt, "parameters": fields, "stream": stream}).encode()


class AnswerTimes:
    """What an answer being streamed has shown so far, and when: its text, the pieces of
    it (one per token event) and the times the first and last came (``clock``'s)."""

    def __init__(self, started: float, clock: Clock) -> None:
        self._clock = clock
        self.started = started
        self.first_text_at: float | None = None
        self.ended_at: float | None = None
        self.deltas = 0
        self.text = ""
        self.finished = False
        self.stopped = False

    def _seen(self, text: str) -> None:
        now = self._clock()
        if self.first_text_at is None:
            self.first_text_at = now
        self.deltas += 1
        self.text += text
        self.ended_at = now

    def _ended(self, *, stopped: bool) -> None:
        if stopped:
            self.stopped = not self.finished
        else:
            self.finished = True
        if self.ended_at is None or not stopped:
            self.ended_at = self._clock()

    @property
    def tokens(self) -> int:
        """Tokens generated: the text pieces seen."""
        return self.deltas

    @property
    def ttft(self) -> float | None:
        """Seconds from sending the request to the first text, once it came."""
        if self.first_text_at is None:
            return None
        return self.first_text_at - self.started

    @property
    def tokens_per_second(self) -> float | None:
        """Decode speed: tokens after the first, per second after the first."""
        if self.first_text_at is None or self.ended_at is None or self.tokens < 2:
            return None
        elapsed = self.ended_at - self.first_text_at
        return (self.tokens - 1) / elapsed if elapsed > 0 else None


class Generation(AnswerTimes):
    """One answer being streamed: iterate its text; ``stop`` ends it (and the generation).

    Closing the response closes the HTTP connection; the gateway then closes its connection
    to the model server, which cancels the request within one decode step.
    """

    def __init__(self, response: dict[str, Any], started: float, clock: Clock) -> None:
        super().__init__(started, clock)
        self._response = response
        self._stream = stream_text(response)

    def __iter__(self) -> Iterator[str]:
        try:
            for delta in self._stream.deltas():
                self._seen(delta.text)
                yield delta.text
            self._ended(stopped=False)
        finally:
            self.close()

    @property
    def tokens(self) -> int:
        """Tokens generated: the server's count once finished, else the text pieces seen."""
        if self.finished:
            counted = self._stream.result.generated_tokens
            if counted:
                return max(counted, self.deltas)
        return self.deltas

    @property
    def result(self) -> StreamResult:
        """What the stream amounted to so far: finish reason, server's text and counts."""
        return self._stream.result

    def stop(self) -> None:
        """End the answer now; the text so far is kept."""
        self._ended(stopped=True)
        self.close()

    def close(self) -> None:
        """Close the response body (idempotent)."""
        body = self._response.get("Body")
        if body is not None and hasattr(body, "close"):
            with contextlib.suppress(Exception):
                body.close()


def start_generation(
    smr: Any,
    endpoint: str,
    body: bytes,
    *,
    session_id: str | None = None,
    clock: Clock = time.perf_counter,
) -> Generation:
    """Send ``body`` with ``InvokeEndpointWithResponseStream``; the answer is read lazily.

    Errors before the stream (unknown endpoint, bad credentials, rejected input) raise
    botocore's ``ClientError`` here; errors in the stream raise ``StreamError`` s while
    iterating.
    """
    extra = {"SessionId": session_id} if session_id else {}
    started = clock()
    response = smr.invoke_endpoint_with_response_stream(
        EndpointName=endpoint, Body=body, ContentType="application/json", **extra
    )
    return Generation(response, started, clock)


@dataclass(frozen=True)
class Completion:
    """A whole answer from ``InvokeEndpoint``."""

    text: str
    tokens: int | None
    latency: float

    @property
    def tokens_per_second(self) -> float | None:
        """Tokens over the whole request time (no first token to separate out)."""
        if not self.tokens or self.latency <= 0:
            return None
        return self.tokens / self.latency


def invoke(smr: Any, endpoint: str, body: bytes, *, clock: Clock = time.perf_counter) -> Completion:
    """Send ``body`` with ``InvokeEndpoint`` and decode the answer, whatever its API."""
    started = clock()
    response = smr.invoke_endpoint(EndpointName=endpoint, Body=body, ContentType="application/json")
    data = response["Body"].read()
    latency = clock() - started
    text_stream = stream_text([data], content_type=response.get("ContentType"))
    text = "".join(text_stream)
    return Completion(text, text_stream.result.generated_tokens, latency)


def open_session(smr: Any, endpoint: str) -> str:
    """Start a stateful session on ``endpoint``; its id, for ``SessionId=`` on later calls."""
    response = smr.invoke_endpoint(
        EndpointName=endpoint,
        Body=json.dumps({"requestType": "NEW_SESSION"}).encode(),
        ContentType="application/json",
        SessionId="NEW_SESSION",
    )
    response["Body"].read()
    header = response.get("NewSessionId")
    if not header:
        raise RuntimeError(f"endpoint {endpoint} did not open a session (no NewSessionId)")
    # "<id>; Expires=2024-01-01T00:00:00Z": the id is what goes back in SessionId.
    return header.split(";", 1)[0].strip()


def close_session(smr: Any, endpoint: str, session_id: str) -> None:
    """Close a session so the model server frees it."""
    response = smr.invoke_endpoint(
        EndpointName=endpoint,
        Body=json.dumps({"requestType": "CLOSE"}).encode(),
        ContentType="application/json",
        SessionId=session_id,
    )
    response["Body"].read()
