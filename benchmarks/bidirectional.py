"""What the gateway adds to a bidirectional stream: turn latency and relay capacity.

A real gateway process (SigV4 on) relays to a minimal fake container, a WebSocket server at
`/invocations-bidirectional-stream` that answers a message `burst N` at once with one
message of N text fragments (a pre-rendered TGI token event each) and an empty last one, so
what is measured is the relay, not a model. The same container is also spoken to directly.

1. Turn latency, one stream: a turn's last input event sent → the answer's first event in,
   over `--turns` turns of `burst 1` on one connection. Direct: the websockets client.
   Through the gateway: HTTP/1.1 with a chunked body from a bare asyncio client, its events
   signed ahead (as the response-streaming benchmark replays its signed requests), so the
   client's signing is not counted but the gateway's verification of every event is.
2. Relay capacity: `--streams` connections at once, each asking `--bursts` times for a
   `burst --events` answer; events per second delivered, per path (wall clock), and the
   gateway process's CPU seconds per million events.

Medians of `--repeats` repeats, the paths taking turns.

    .venv/bin/python benchmarks/bidirectional.py --repeats 5

The report goes to stdout and to `benchmarks/results/bidirectional.md`.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from websockets.asyncio.client import connect

from streamhost.bench.relay import (
    ACCESS_KEY,
    REGION,
    SECRET_KEY,
    deploy,
    gateway_process,
    install_uvloop,
    instance_python_with_fake,
)
from streamhost.client.eventencode import stream_part
from streamhost.client.eventsign import EVENT_STREAM_PAYLOAD, EventSigner
from streamhost.gateway.settings import sqlite_url
from streamhost.gateway.store import Store

PATH = "/invocations-bidirectional-stream"
RESULTS = Path(__file__).resolve().parent / "results" / "bidirectional.md"

# The fake container: /ping for the health checks, the WebSocket for the streams.
FAKE_CONTAINER = r"""
import asyncio, sys
from http import HTTPStatus
from websockets.asyncio.server import serve
port = int(sys.argv[sys.argv.index("--port") + 1])
EVENT = '{"index":1,"token":{"id":0,"text":"0 ","logprob":0.0,"special":false},"generated_text":null,"details":null}\n'

def ping(connection, request):
    if request.path == "/ping":
        return connection.respond(HTTPStatus.OK, "")

async def talk(ws):
    async for message in ws:
        count = int(message.split()[1]) if message.startswith("burst ") else 1
        await ws.send([EVENT] * count + [""])

async def main():
    async with serve(talk, "127.0.0.1", port, process_request=ping, max_size=None):
        await asyncio.Future()

asyncio.run(main())
"""


def part(text: str) -> bytes:
    return stream_part(text.encode(), True, True)


class GatewayStream:
    """One bidirectional stream through the gateway on a bare HTTP/1.1 connection."""

    def __init__(self, url: str, endpoint: str) -> None:
        self.host, self.port = url.split("//")[1].split(":")
        self.path = f"/endpoints/{endpoint}{PATH}"
        self.url = url + self.path
        self.events = 0
        self._buffer = b""

    async def open(self, turns: list[str]) -> None:
        """Connect, send the head, sign every turn ahead."""
        request = AWSRequest(
            "POST",
            self.url,
            headers={
                "Content-Type": "application/vnd.amazon.eventstream",
                "X-Amz-Content-SHA256": EVENT_STREAM_PAYLOAD,
            },
        )
        SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "sagemaker", REGION).add_auth(request)
        seed = request.headers["Authorization"].rsplit("Signature=", 1)[1]
        signer = EventSigner(ACCESS_KEY, SECRET_KEY, REGION, seed)
        now = datetime.now(timezone.utc)
        self.signed = [signer.sign(part(turn), now=now) for turn in turns]
        self.reader, self.writer = await asyncio.open_connection(self.host, int(self.port))
        head = [f"POST {self.path} HTTP/1.1", f"host: {self.host}:{self.port}"]
        head += [f"{name}: {value}" for name, value in request.headers.items()]
        head += ["transfer-encoding: chunked", "", ""]
        self.writer.write("\r\n".join(head).encode())
        self._turn = 0
        self._head_read = False

    async def turn(self) -> float:
        """Send the next signed turn; seconds until the answer's first event came, once the
        whole answer (up to its COMPLETE part) has come."""
        event = self.signed[self._turn]
        self._turn += 1
        self.writer.write(b"%x\r\n%s\r\n" % (len(event), event))
        sent = time.perf_counter()
        first = None
        while True:
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionError("the gateway closed the stream")
            if first is None:
                if not self._head_read:
                    head, _, data = (self._buffer + data).partition(b"\r\n\r\n")
                    if b" 200 " not in head.split(b"\r\n")[0]:
                        raise RuntimeError(head.decode())
                    self._head_read = True
                    self._buffer = b""
                if data:
                    first = time.perf_counter() - sent
            self._buffer += data
            if self._complete():
                return first if first is not None else time.perf_counter() - sent

    def _complete(self) -> bool:
        """Whether the buffered body holds a COMPLETE part (chunk framing stripped)."""
        found = b"\x00\x08COMPLETE" in self._buffer
        if found:
            self.events += self._buffer.count(b"PayloadPart")
            self._buffer = b""
        return found

    def close(self) -> None:
        self.writer.close()


async def direct_turns(url: str, secret: str, turns: int) -> list[float]:
    latencies = []
    async with connect(url, additional_headers={"x-streamhost-instance-secret": secret}) as ws:
        for _ in range(turns):
            await ws.send("burst 1")
            sent = time.perf_counter()
            fragments = ws.recv_streaming()
            await fragments.__anext__()
            latencies.append(time.perf_counter() - sent)
            async for _ in fragments:
                pass
    return latencies


async def gateway_turns(url: str, turns: int) -> list[float]:
    stream = GatewayStream(url, "fake")
    await stream.open(["burst 1"] * turns)
    try:
        return [await stream.turn() for _ in range(turns)]
    finally:
        stream.close()


async def direct_capacity(url: str, secret: str, streams: int, bursts: int, events: int) -> int:
    async def one() -> int:
        count = 0
        headers = {"x-streamhost-instance-secret": secret}
        async with connect(url, additional_headers=headers, max_size=None) as ws:
            for _ in range(bursts):
                await ws.send(f"burst {events}")
                async for _ in ws.recv_streaming():
                    count += 1
        return count

    return sum(await asyncio.gather(*(one() for _ in range(streams))))


async def gateway_capacity(url: str, streams: int, bursts: int, events: int) -> int:
    async def one() -> int:
        stream = GatewayStream(url, "fake")
        await stream.open([f"burst {events}"] * bursts)
        try:
            for _ in range(bursts):
                await stream.turn()
            return stream.events
        finally:
            stream.close()

    return sum(await asyncio.gather(*(one() for _ in range(streams))))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--bursts", type=int, default=5)
    parser.add_argument("--events", type=int, default=1000)
    args = parser.parse_args()
    install_uvloop()
    root = Path(tempfile.mkdtemp(prefix="streamhost-bidi-bench-"))
    wrapper = instance_python_with_fake(root, FAKE_CONTAINER)
    latency: dict[str, list[float]] = {"direct": [], "gateway": []}
    rate: dict[str, list[float]] = {"direct": [], "gateway": []}
    cpu_per_million: list[float] = []
    try:
        with gateway_process(root, str(wrapper)) as (url, state):
            deploy(url, "fake", {"HF_MODEL_ID": "synthetic:0", "BENCH_FAKE_CONTAINER": "1"})
            store = Store.open(sqlite_url(state))
            record = store.list_instances("fake")[0]
            store.close()
            direct_url = f"ws://127.0.0.1:{record.port}{PATH}"
            gateway = next(
                p
                for p in psutil.process_iter(["cmdline"])
                if str(state) in " ".join(p.info["cmdline"] or [])
            )
            for repeat in range(args.repeats):
                latency["direct"].append(
                    statistics.median(
                        asyncio.run(direct_turns(direct_url, record.secret, args.turns))
                    )
                )
                latency["gateway"].append(
                    statistics.median(asyncio.run(gateway_turns(url, args.turns)))
                )
                shape = (args.streams, args.bursts, args.events)
                started = time.perf_counter()
                count = asyncio.run(direct_capacity(direct_url, record.secret, *shape))
                rate["direct"].append(count / (time.perf_counter() - started))
                cpu = gateway.cpu_times()
                started = time.perf_counter()
                count = asyncio.run(gateway_capacity(url, *shape))
                rate["gateway"].append(count / (time.perf_counter() - started))
                after = gateway.cpu_times()
                spent = (after.user + after.system) - (cpu.user + cpu.system)
                cpu_per_million.append(spent / count * 1e6)
                print(
                    f"repeat {repeat + 1}/{args.repeats}: turn p50 direct "
                    f"{latency['direct'][-1] * 1e3:.3f} ms, gateway {latency['gateway'][-1] * 1e3:.3f} "
                    f"ms; events/s direct {rate['direct'][-1]:,.0f}, gateway {rate['gateway'][-1]:,.0f}",
                    file=sys.stderr,
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)

    med = statistics.median
    added = med(g - d for g, d in zip(latency["gateway"], latency["direct"], strict=True))
    lines = [
        "# Bidirectional streams: what the gateway adds",
        "",
        f"`python benchmarks/bidirectional.py --repeats {args.repeats} --turns {args.turns} "
        f"--streams {args.streams} --bursts {args.bursts} --events {args.events}`, "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, this 2-core machine. Medians of "
        f"{args.repeats} repeats (each repeat's own median for the latencies).",
        "",
        "| measure | direct WebSocket | through the gateway | gateway ÷ direct |",
        "|---|---|---|---|",
        f"| turn latency p50 (last input event → first answer event) | "
        f"{med(latency['direct']) * 1e3:.3f} ms | {med(latency['gateway']) * 1e3:.3f} ms | "
        f"**+{added * 1e3:.3f} ms** |",
        f"| relay capacity ({args.streams} streams × {args.bursts} answers × {args.events} "
        f"events) | {med(rate['direct']):,.0f} events/s | {med(rate['gateway']):,.0f} events/s "
        f"| {med(rate['gateway']) / med(rate['direct']):.2f} |",
        "",
        "The direct path's rate is that of its client (websockets' asyncio client joins "
        "and decodes every fragment in Python); the gateway path's bare client only counts "
        "bytes, so the ratio is not the relay's cost. The gateway's CPU per event is:",
        "",
        f"Gateway CPU per million relayed events: {med(cpu_per_million):.1f} s "
        f"(so one gateway process relays up to ~{1e6 / med(cpu_per_million):,.0f} events per "
        "CPU-second).",
        "",
        "| target | result |",
        "|---|---|",
        f"| added turn latency p50 ≤ 1 ms | {'met' if added <= 1e-3 else 'missed'} "
        f"(+{added * 1e3:.3f} ms) |",
        f"| ≥ 20,000 relayed events/s from one gateway process | "
        f"{'met' if med(rate['gateway']) >= 20000 else 'missed'} "
        f"({med(rate['gateway']):,.0f}/s) |",
        "",
        "Per repeat: turn p50 ms direct "
        + ", ".join(f"{v * 1e3:.3f}" for v in latency["direct"])
        + "; gateway "
        + ", ".join(f"{v * 1e3:.3f}" for v in latency["gateway"])
        + "; events/s direct "
        + ", ".join(f"{v:,.0f}" for v in rate["direct"])
        + "; gateway "
        + ", ".join(f"{v:,.0f}" for v in rate["gateway"])
        + ".",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    RESULTS.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
