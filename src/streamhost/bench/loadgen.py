"""A streaming load generator with vLLM's metric definitions.

Each request is timed from just before it is sent: TTFT is the arrival of the first
message that carries generated text (a role-only chunk does not count), ITL the gaps between later token-bearing messages, E2E the
arrival of the last one; output tokens come from the server's ``usage`` (OpenAI) or
``details`` (TGI), never from counting frames. Closed loop (a fixed number of requests in
flight) or open loop (Poisson arrivals).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass
class RequestResult:
    """Timings of one request (seconds, from just before it was sent)."""

    ok: bool = False
    ttft: float = 0.0
    latency: float = 0.0
    itl: list[float] = field(default_factory=list)
    output_tokens: int = 0
    error: str = ""


@dataclass
class Workload:
    """What to send: prompts, a token budget and the API to speak."""

    url: str
    prompts: list[str]
    max_tokens: int
    api: str = "openai-chat"  # openai-chat | openai-completions | tgi
    model: str = "tiny"
    ignore_eos: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def request(self, prompt: str) -> tuple[str, dict[str, Any]]:
        """The path and JSON body for one prompt."""
        if self.api == "tgi":
            params: dict[str, Any] = {"max_new_tokens": self.max_tokens, "details": True}
            if self.ignore_eos:
                params["ignore_eos"] = True
            return "/generate_stream", {"inputs": prompt, "parameters": {**params, **self.extra}}
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
            **self.extra,
        }
        if self.ignore_eos:
            body["ignore_eos"] = True
        if self.api == "openai-completions":
            return "/v1/completions", {**body, "prompt": prompt}
        return "/v1/chat/completions", {**body, "messages": [{"role": "user", "content": prompt}]}


def _has_token(message: dict[str, Any], api: str) -> bool:
    # A token is a message with generated text. vLLM counts any message with `choices`,
    # but some servers (transformers serve) send a role-only chunk the moment a request
    # arrives, which would make their TTFT the time to *no* token.
    if api == "tgi":
        return "token" in message
    for choice in message.get("choices") or ():
        delta = choice.get("delta")
        if (delta and delta.get("content")) or choice.get("text"):
            return True
    return False


def _tokens(message: dict[str, Any], api: str) -> int | None:
    if api == "tgi":
        details = message.get("details")
        return details.get("generated_tokens") if isinstance(details, dict) else None
    usage = message.get("usage")
    return usage.get("completion_tokens") if isinstance(usage, dict) else None


class StreamTimer:
    """Times the SSE messages of one response as its bytes arrive."""

    def __init__(self, api: str) -> None:
        self.api = api
        self.result = RequestResult()
        self.started = self.last = time.perf_counter()
        self.frames = 0
        self.last_message = self.started
        self._buffer = b""

    def feed(self, data: bytes, now: float) -> bool:
        """Account for bytes that arrived at ``now``; False once an in-band error came."""
        self._buffer += data
        *messages, self._buffer = self._buffer.split(b"\n\n")
        result = self.result
        for raw in messages:
            raw = raw.strip()
            if not raw.startswith(b"data:"):
                continue
            payload = raw[5:].strip()
            if payload == b"[DONE]":
                continue
            message = orjson.loads(payload)
            self.last_message = now
            if "error" in message:
                result.error = str(message["error"])[:200]
                return False
            if _has_token(message, self.api):
                self.frames += 1
                if self.frames == 1:
                    result.ttft = now - self.started
                else:
                    result.itl.append(now - self.last)
                self.last = now
            tokens = _tokens(message, self.api)
            if tokens is not None:
                result.output_tokens = tokens
        return True

    def finish(self) -> RequestResult:
        """The result once the response ended."""
        result = self.result
        if result.error:
            return result
        if self.frames == 0 and result.output_tokens:
            # Every token was special (no text): the answer "arrived" with its last message.
            result.ttft = result.latency = self.last_message - self.started
            result.ok = True
            return result
        result.latency = self.last - self.started
        result.output_tokens = result.output_tokens or self.frames
        result.ok = self.frames > 0
        return result


async def send(session, workload: Workload, prompt: str) -> RequestResult:
    """Send one streaming request and time its token-bearing messages."""
    path, body = workload.request(prompt)
    timer = StreamTimer(workload.api)
    try:
        async with session.post(
            workload.url + path,
            data=orjson.dumps(body),
            headers={"Content-Type": "application/json", **workload.headers},
        ) as response:
            if response.status != 200:
                timer.result.error = f"HTTP {response.status}: {(await response.text())[:200]}"
                return timer.result
            async for chunk in response.content.iter_any():
                if not timer.feed(chunk, time.perf_counter()):
                    break
    except Exception as exc:  # a failed request is counted, not fatal to the run
        timer.result.error = f"{type(exc).__name__}: {exc}"
        return timer.result
    return timer.finish()


async def run(
    workload: Workload,
    num_requests: int,
    concurrency: int,
    rate: float | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[RequestResult], float]:
    """Send ``num_requests`` with at most ``concurrency`` in flight; return results and duration.

    With ``rate`` set, requests start as a Poisson process of that many per second.
    """
    import aiohttp

    rng = random.Random(seed)
    limit = asyncio.Semaphore(concurrency)
    done = 0
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(i: int, delay: float) -> RequestResult:
            nonlocal done
            if delay:
                await asyncio.sleep(delay)
            async with limit:
                result = await send(session, workload, workload.prompts[i % len(workload.prompts)])
            done += 1
            if progress is not None:
                progress(done, num_requests)
            return result

        delays = [0.0] * num_requests
        if rate:
            t = 0.0
            for i in range(num_requests):
                delays[i] = t
                t += rng.expovariate(rate)
        started = time.perf_counter()
        results = await asyncio.gather(*[one(i, delays[i]) for i in range(num_requests)])
        duration = time.perf_counter() - started
    return list(results), duration


def random_prompts(
    decode: Callable[[list[int]], str], vocab_size: int, length: int, count: int, seed: int = 0
) -> list[str]:
    """Fixed-length prompts of random token ids, decoded to text (vLLM's ``random`` dataset)."""
    rng = random.Random(seed)
    return [decode([rng.randrange(10, vocab_size) for _ in range(length)]) for _ in range(count)]
