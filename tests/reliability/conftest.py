"""What the reliability tests share: a gateway run as its own process, a signed streaming
client that checks every token's sequence number, and process measurements.

The gateway runs as `python -m streamhost.cli gateway` (not on a thread of the test
process) so that it can be killed with SIGKILL, and so that its memory, file descriptors
and CPU are its own and not the test client's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import ssl
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psutil

from streamhost.client import EventStreamDecoder, SSEParser, StreamError
from streamhost.gateway.store import Store
from tests.gateway.conftest import ACCESS_KEY, SECRET_KEY, client, signed_headers
from tests.server.conftest import free_port

# Longer runs on demand: STREAMHOST_SOAK_SECONDS=600 STREAMHOST_SOAK_STREAMS=1000.
SOAK_SECONDS = float(os.environ.get("STREAMHOST_SOAK_SECONDS", "20"))
SOAK_STREAMS = int(os.environ.get("STREAMHOST_SOAK_STREAMS", "200"))
SOAK = "STREAMHOST_SOAK_SECONDS" in os.environ


# -- a gateway process ------------------------------------------------------------------


class GatewayProcess:
    """`streamhost gateway` as a child process, with a state folder that outlives it."""

    def __init__(self, state_dir: Path, *args: str, ca_file: str | None = None) -> None:
        self.state_dir = state_dir
        self.args = args
        # With `ca_file` the gateway serves HTTPS (args name its certificate) and that CA is
        # trusted to reach it.
        self.ca_file = ca_file
        self._trust = ssl.create_default_context(cafile=ca_file) if ca_file else None
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.credentials = state_dir / "credentials"
        self.credentials.write_text(
            f"[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
        )
        self.db = state_dir / "gateway.db"
        self.log = state_dir / "gateway.log"
        self.port = free_port()
        self.url = f"{'https' if ca_file else 'http'}://127.0.0.1:{self.port}"
        self.popen: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> GatewayProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        argv = [
            sys.executable,
            "-m",
            "streamhost.cli",
            "--log-level",
            "warning",
            "gateway",
            "--port",
            str(self.port),
            "--state",
            str(self.db),
            "--credentials",
            str(self.credentials),
            *self.args,
        ]
        with self.log.open("ab") as log:
            self.popen = subprocess.Popen(
                argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + timeout
        while True:
            assert self.popen.poll() is None, f"gateway exited: {self.log_text()}"
            try:
                with urllib.request.urlopen(self.url + "/ping", timeout=1, context=self._trust):
                    return self
            except OSError:
                assert time.monotonic() < deadline, "gateway did not start"
                time.sleep(0.1)

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash or an OOM kill."""
        assert self.popen is not None
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(30)

    def stop(self) -> None:
        """SIGTERM, as systemd or Ctrl-C stops it: its instances are stopped too."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(90)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(30)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def sm(self, **config: Any) -> Any:
        return client("sagemaker", self.url, verify=self.ca_file, **config)

    def smr(self, **config: Any) -> Any:
        return client("sagemaker-runtime", self.url, verify=self.ca_file, **config)

    def instances(self, endpoint: str | None = None) -> list[Any]:
        """The store's instance records (read beside the running gateway: SQLite WAL)."""
        store = Store.open(f"sqlite:///{self.db}")
        try:
            return store.list_instances(endpoint) if endpoint else store.list_instances()
        finally:
            store.close()

    def model_servers(self) -> list[psutil.Process]:
        """Every live model-server process that belongs to this gateway's state folder."""
        return model_servers_under(self.state_dir)


def model_servers_under(folder: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        cmdline = process.info["cmdline"] or []
        if process.info["status"] == psutil.STATUS_ZOMBIE or "serve-model" not in cmdline:
            continue
        if any(str(folder) in part for part in cmdline):
            found.append(process)
    return found


def reap_model_servers(folder: Path) -> None:
    """Kill whatever model server a failed test left behind (and fail if any was left)."""
    deadline = time.monotonic() + 20
    while model_servers_under(folder) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = model_servers_under(folder)
    for process in left:
        with contextlib.suppress(psutil.Error):
            process.kill()
    assert not left, f"model servers left running: {[p.pid for p in left]}"


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


def wait_for(condition: Any, timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# -- a signed streaming client -----------------------------------------------------------


def tgi_body(tokens: int, text: str = "hello") -> bytes:
    return orjson.dumps({"inputs": text, "parameters": {"max_new_tokens": tokens}, "stream": True})


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
    body = tgi_body(tokens)
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
