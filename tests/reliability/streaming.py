"""What the reliability tests share beside the harness: a signed streaming client that
checks every token's sequence number, and process measurements.

The reliability tests run the gateway as its own process (`tests.harness.GatewayProcess`)
so that it can be killed with SIGKILL, and so that its memory, file descriptors and CPU
are its own and not the test client's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import statistics
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import psutil

from streamhost.client import EventStreamDecoder, SSEParser, StreamError
from tests.harness import signed_headers, tgi_body

# Longer runs on demand: STREAMHOST_SOAK_SECONDS=600 STREAMHOST_SOAK_STREAMS=1000.
SOAK_SECONDS = float(os.environ.get("STREAMHOST_SOAK_SECONDS", "20"))
SOAK_STREAMS = int(os.environ.get("STREAMHOST_SOAK_STREAMS", "200"))
SOAK = "STREAMHOST_SOAK_SECONDS" in os.environ


# -- measurements ------------------------------------------------------------------------


def rss_mib(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def instance_metric(record: Any, name: str) -> float:
    """One value of an instance's Prometheus `/metrics`."""
    url = f"http://127.0.0.1:{record.port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# -- a signed streaming client -----------------------------------------------------------


@dataclass
class Outcome:
    """What one streamed request delivered, as the client saw it."""

    asked: int = 0  # max_new_tokens of the request
    status: int = 0
    tokens: list[int] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)  # monotonic time of each token
    generated_text: str | None = None
    error: str | None = None  # AWS error code, or the stream's exception type
    error_code: str | None = None  # ModelStreamError's StreamBroken, ModelInvocationTimeExceeded
    message: str = ""
    started: float = 0.0

    @property
    def complete(self) -> bool:
        return self.generated_text is not None and self.error is None

    def in_order(self) -> bool:
        """Sequence numbers 0, 1, 2, … with nothing lost, repeated or swapped."""
        return self.tokens == list(range(len(self.tokens)))

    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.arrivals, self.arrivals[1:], strict=False)]


async def stream_tokens(
    http: aiohttp.ClientSession,
    url: str,
    endpoint: str,
    tokens: int,
    *,
    stop_after: int | None = None,
    timeout: float = 300,
) -> Outcome:
    """Invoke `endpoint` with a TGI streaming request for `tokens` synthetic tokens and
    read the whole event stream (or only `stop_after` tokens, then hang up)."""
    target = f"{url}/endpoints/{endpoint}/invocations-response-stream"
    body = tgi_body(tokens=tokens)
    headers = signed_headers(target, body, {"Content-Type": "application/json"})
    outcome = Outcome(asked=tokens, started=time.monotonic())
    async with http.post(
        target, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
    ) as response:
        outcome.status = response.status
        if response.status != 200:
            error = orjson.loads(await response.read())
            outcome.error = error.get("__type")
            outcome.message = error.get("message", "")
            return outcome
        events, sse = EventStreamDecoder(), SSEParser()
        try:
            async for chunk in response.content.iter_any():
                for payload in events.feed(chunk):
                    for event in sse.feed(payload):
                        _take(outcome, orjson.loads(event.data))
                if stop_after is not None and len(outcome.tokens) >= stop_after:
                    response.close()
                    return outcome
            events.close()
        except StreamError as error:
            outcome.error = type(error).__name__
            outcome.error_code = getattr(error, "error_code", None)
            outcome.message = str(error)
    return outcome


def _take(outcome: Outcome, event: dict[str, Any]) -> None:
    if "error" in event:
        outcome.error = event.get("error_type") or "error"
        outcome.message = event["error"]
        return
    outcome.tokens.append(event["token"]["id"])
    outcome.arrivals.append(time.monotonic())
    if event.get("generated_text") is not None:
        outcome.generated_text = event["generated_text"]


def expected_text(tokens: int, prompt: str = "hello") -> str:
    """The text a synthetic stream ends with: through `/invocations` TGI returns the
    prompt too (`return_full_text` defaults to true there, as on SageMaker)."""
    return prompt + "".join(f"{i} " for i in range(tokens))


async def sample_rss(pids: dict[str, int], every: float, samples: dict[str, list]) -> None:
    """Append (elapsed seconds, RSS MiB) for each named pid until cancelled."""
    start = time.monotonic()
    while True:
        for name, pid in pids.items():
            with contextlib.suppress(psutil.Error):
                samples.setdefault(name, []).append((time.monotonic() - start, rss_mib(pid)))
        await asyncio.sleep(every)


def connector(limit: int = 0) -> aiohttp.TCPConnector:
    return aiohttp.TCPConnector(limit=limit, force_close=True)


def report(scenario: str, **figures: Any) -> None:
    """Print a scenario's measured figures (`pytest -s` shows them); with
    `STREAMHOST_RELIABILITY_REPORT=FILE` also append them to FILE as one JSON line."""
    line = orjson.dumps({"scenario": scenario, **figures}, option=orjson.OPT_SERIALIZE_NUMPY)
    print(f"\n[reliability] {line.decode()}")
    path = os.environ.get("STREAMHOST_RELIABILITY_REPORT")
    if path:
        with open(path, "ab") as file:
            file.write(line + b"\n")
