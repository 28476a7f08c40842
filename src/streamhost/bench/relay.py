"""Gateway relay overhead: streams direct to a model-server instance, through the gateway,
and through nginx as a plain reverse proxy, side by side on this machine.

Scenarios (each repeated, interleaved, medians reported):
  * `synthetic:5` (a token every 5 ms), 1 and 64 concurrent streams of 200 tokens:
    TTFB (request sent → first token) and inter-chunk gaps, per path. At 1 stream the TTFB
    comes from 60 short streams per repeat, the paths taking turns; the 64 start at once.
  * `synthetic:5` steady, the suite's default load: 32 clients in a closed loop, each
    running 64-token streams back to back, their starts spread over one stream's length so
    requests arrive steadily rather than in waves (each client's first stream not counted).
  * relay capacity: a minimal fake container that writes pre-rendered SSE chunks as fast
    as it can, 64 streams of 1000 chunks: events/s each path delivers.
The gateway runs with SigV4 on (requests are signed once per run and replayed, so the
client's signing cost is not counted but the gateway's verification is). nginx runs with
`proxy_buffering off` and HTTP/1.1 keep-alive upstream, if `nginx` is installed (the
script tries `apt-get install -y nginx` when run as root).

Scenario 3 of `streamhost bench` (``--scenario gateway``); scenario 4 (``e2e``) reuses the
same gateway set-up with the ``tiny`` model.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from random import Random

import aiohttp
import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from streamhost.bench.scenarios import Table
from streamhost.gateway.settings import sqlite_url
from streamhost.gateway.store import Store
from streamhost.ports import free_port

ACCESS_KEY, SECRET_KEY, REGION = "AKIDBENCHMARK", "benchmark-secret", "us-east-1"
TGI_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-tgi-inference:2.4"
ROLE = "arn:aws:iam::123456789012:role/bench"
SECRET_HEADER = "x-streamhost-instance-secret"

GATEWAY_BOOTSTRAP = """
import dataclasses, os, sys
from streamhost.gateway.app import serve
from streamhost.gateway.settings import build_settings
port, state, credentials, python = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
ray_address = sys.argv[5] if len(sys.argv) > 5 else None
extra = dict(provisioner="ray", ray_address=ray_address, ray_resource_scale=0.25) if ray_address else {}
settings = build_settings(port=int(port), state=state, credentials=credentials, **extra)
settings = dataclasses.replace(settings, instance_python=python)
if ray_address:
    from streamhost.gateway.ray_launcher import connect, namespace_for
    connect(ray_address, namespace_for(settings.state_url))
serve(settings, log_level="warning")
"""

# Stands in for the model server when BENCH_FAKE_CONTAINER is set: answers /ping, and
# streams max_new_tokens pre-rendered TGI SSE chunks as fast as the socket takes them.
FAKE_CONTAINER = r"""
import asyncio, json, sys
port = int(sys.argv[sys.argv.index("--port") + 1])
EVENT = b'data: {"index":1,"token":{"id":0,"text":"0 ","logprob":0.0,"special":false},"generated_text":null,"details":null}\n\n'
CHUNK = b"%x\r\n" % len(EVENT) + EVENT + b"\r\n"
HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"

async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            length = 0
            for line in lines[1:]:
                if line.lower().startswith("content-length:"):
                    length = int(line.split(":", 1)[1])
            body = await reader.readexactly(length) if length else b""
            if lines[0].startswith("GET /ping"):
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                continue
            tokens = json.loads(body)["parameters"]["max_new_tokens"]
            writer.write(HEAD)
            for start in range(0, tokens, 10):
                writer.write(CHUNK * min(10, tokens - start))
                await writer.drain()
                await asyncio.sleep(0)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()

async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", port)
    async with server:
        await server.serve_forever()

asyncio.run(main())
"""

INSTANCE_WRAPPER = """#!/bin/sh
if [ -n "$BENCH_FAKE_CONTAINER" ]; then exec "{python}" "{fake}" "$@"; fi
exec "{python}" "$@"
"""

NGINX_CONF = """
worker_processes 1;
error_log {root}/error.log warn;
pid {root}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {root}/body;
  proxy_temp_path {root}/proxy;
  fastcgi_temp_path {root}/fastcgi;
  uwsgi_temp_path {root}/uwsgi;
  scgi_temp_path {root}/scgi;
  upstream synthetic {{ server 127.0.0.1:{synthetic}; keepalive 128; }}
  upstream fake {{ server 127.0.0.1:{fake}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{port};
    location /synthetic/ {{
      proxy_pass http://synthetic/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_request_buffering off;
    }}
    location /fake/ {{
      proxy_pass http://fake/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_request_buffering off;
    }}
  }}
}}
"""


@dataclass
class Run:
    """One scenario run on one path: every stream's TTFB and gaps, and the rate."""

    ttfb: list[float] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    events: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not come up") from None
            time.sleep(0.1)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def count_sse(buffer: bytearray, data: bytes) -> int:
    buffer += data
    count = buffer.count(b"\n\n")
    cut = buffer.rfind(b"\n\n")
    if cut >= 0:
        del buffer[: cut + 2]
    return count


def count_eventstream(buffer: bytearray, data: bytes) -> int:
    buffer += data
    count = 0
    while len(buffer) >= 4:
        total = int.from_bytes(buffer[:4], "big")
        if len(buffer) < total:
            break
        del buffer[:total]
        count += 1
    return count


def client_session() -> aiohttp.ClientSession:
    """The load generator's client: no pool limit (the concurrency is the scenario's)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=600)
    )


async def one_stream(
    session: aiohttp.ClientSession, url: str, headers: dict, body: bytes, kind: str, run: Run
) -> tuple[float, float]:
    counter = count_eventstream if kind == "eventstream" else count_sse
    buffer = bytearray()
    started = time.perf_counter()
    last = None
    async with session.post(url, data=body, headers=headers) as response:
        if response.status != 200:
            raise RuntimeError(f"{url}: {response.status} {await response.text()}")
        async for data, _ in response.content.iter_chunks():
            now = time.perf_counter()
            events = counter(buffer, data)
            if not events:
                continue
            if last is None:
                run.ttfb.append(now - started)
            else:
                run.gaps.append(now - last)
            run.gaps.extend([0.0] * (events - 1))  # arrived in the same read
            run.events += events
            last = now
    return started, time.perf_counter()


async def scenario(target: dict, concurrency: int, body: bytes, rounds: int = 1) -> Run:
    """`rounds` rounds, one after another, of `concurrency` simultaneous streams."""
    run = Run()
    async with client_session() as session:
        # Warm the connection pool so every path starts with open connections.
        await asyncio.gather(
            *(
                one_stream(
                    session, target["url"], target["headers"](body), body, target["kind"], Run()
                )
                for _ in range(min(concurrency, 8))
            )
        )
        spans = []
        for _ in range(rounds):
            spans += await asyncio.gather(
                *(
                    one_stream(
                        session, target["url"], target["headers"](body), body, target["kind"], run
                    )
                    for _ in range(concurrency)
                )
            )
    run.seconds = max(end for _, end in spans) - min(start for start, _ in spans)
    return run


async def steady(target: dict, concurrency: int, body: bytes, tokens: int, streams: int) -> Run:
    """`concurrency` clients each running `streams` streams back to back, started at random
    moments within one stream's length (`tokens` at 5 ms): a steady closed loop. Each client's
    first stream warms its connection and is not counted."""
    run = Run()
    spread = tokens * 0.005
    random = Random(concurrency)

    async def client(session: aiohttp.ClientSession, delay: float) -> tuple[float, float]:
        await asyncio.sleep(delay)
        headers = target["headers"](body)
        await one_stream(session, target["url"], headers, body, target["kind"], Run())
        started = time.perf_counter()
        for _ in range(streams - 1):
            await one_stream(session, target["url"], headers, body, target["kind"], run)
        return started, time.perf_counter()

    async with client_session() as session:
        spans = await asyncio.gather(
            *(client(session, random.uniform(0, spread)) for _ in range(concurrency))
        )
    run.seconds = max(end for _, end in spans) - min(start for start, _ in spans)
    return run


async def ttfb_series(targets: dict, body: bytes, streams: int) -> dict[str, list[float]]:
    """TTFB of `streams` sequential short streams per path, the paths in turn."""
    samples: dict[str, list[float]] = {path: [] for path in targets}
    async with client_session() as session:
        for index in range(streams + 3):  # the first 3 warm the connections
            for path, target in targets.items():
                run = Run()
                headers = target["headers"](body)
                await one_stream(session, target["url"], headers, body, target["kind"], run)
                if index >= 3:
                    samples[path] += run.ttfb
    return samples


def signer(url: str):
    """Headers for the gateway: signed once per body, as boto3 would sign it."""
    cache: dict[bytes, dict] = {}

    def headers(body: bytes) -> dict:
        if body not in cache:
            request = AWSRequest(
                method="POST", url=url, data=body, headers={"Content-Type": "application/json"}
            )
            SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "sagemaker", REGION).add_auth(request)
            cache[body] = dict(request.headers.items())
        return cache[body]

    return headers


def direct_and_gateway(gateway_url: str, endpoint: str, record) -> dict[str, dict]:
    """The two paths to one instance (its store record): straight to its /invocations with
    its secret, and through the gateway's streaming route, signed."""
    direct_headers = {"Content-Type": "application/json", SECRET_HEADER: record.secret}
    stream_url = f"{gateway_url}/endpoints/{endpoint}/invocations-response-stream"
    return {
        "direct": {
            "url": f"http://127.0.0.1:{record.port}/invocations",
            "headers": lambda body: direct_headers,
            "kind": "sse",
        },
        "gateway": {"url": stream_url, "headers": signer(stream_url), "kind": "eventstream"},
    }


def start_nginx(
    root: Path, synthetic_port: int, fake_port: int
) -> tuple[subprocess.Popen, int] | None:
    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if nginx is None and os.geteuid() == 0:
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "nginx"], capture_output=True, check=False
        )
        nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if nginx is None:
        print("nginx is not available: its column is skipped", file=sys.stderr)
        return None
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = root / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(root=root, synthetic=synthetic_port, fake=fake_port, port=port)
    )
    process = subprocess.Popen(
        [nginx, "-p", str(root), "-c", str(conf), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return process, port
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError(f"nginx did not start; see {root}/error.log")
        time.sleep(0.05)


def install_uvloop() -> None:
    """uvloop for this process's event loops, where installed: the benchmark's client must
    not be the bottleneck."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass


def instance_python_with_fake(root: Path, fake_container: str) -> Path:
    """A Python for the gateway's instances that runs `fake_container` (a script) in place
    of the model server when the endpoint's environment sets BENCH_FAKE_CONTAINER."""
    (root / "fake.py").write_text(fake_container)
    wrapper = root / "python"
    wrapper.write_text(INSTANCE_WRAPPER.format(python=sys.executable, fake=root / "fake.py"))
    wrapper.chmod(0o755)
    return wrapper


@contextlib.contextmanager
def gateway_process(root: Path, instance_python: str, ray_address: str | None = None):
    """A gateway subprocess (SigV4 on, state and credentials under `root`), ready on /ping:
    yields (its URL, its state database). Leaving stops it, and it stops its instances.
    With `ray_address` its instances are actors on that Ray cluster."""
    (root / "credentials").write_text(
        f"[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    state = root / "state" / "gateway.db"
    gateway = subprocess.Popen(
        [
            sys.executable,
            "-c",
            GATEWAY_BOOTSTRAP,
            str(port),
            str(state),
            str(root / "credentials"),
            instance_python,
            *([ray_address] if ray_address else []),
        ],
        env=env,
    )
    try:
        wait_http(url + "/ping")
        yield url, state
    finally:
        gateway.send_signal(signal.SIGTERM)  # stops the instances it started
        with contextlib.suppress(subprocess.TimeoutExpired):
            gateway.wait(60)


def deploy(url: str, name: str, environment: dict) -> float:
    """Create the endpoint; seconds from CreateEndpoint to InService."""
    sm = boto3.session.Session().client(
        "sagemaker",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(retries={"total_max_attempts": 1}),
    )
    sm.create_model(
        ModelName=name,
        ExecutionRoleArn=ROLE,
        PrimaryContainer={"Image": TGI_IMAGE, "Environment": environment},
    )
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": name,
                "InstanceType": "ml.m5.xlarge",
                "InitialInstanceCount": 1,
            }
        ],
    )
    started = time.perf_counter()
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    sm.get_waiter("endpoint_in_service").wait(
        EndpointName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 600}
    )
    return time.perf_counter() - started


@dataclass
class RelayOptions:
    """What scenario 3 runs."""

    repeats: int = 3
    levels: tuple[int, ...] = (1, 64)
    tokens: int = 200
    capacity_tokens: int = 1000
    single_rounds: int = 10
    ttfb_streams: int = 60  # short streams per path and repeat for the 1-stream TTFB
    steady: tuple[int, int, int] = (32, 64, 10)  # clients, tokens, streams each; 0 clients: none
    nginx: bool = True


def run_relay(args: RelayOptions, progress=None) -> Table:
    """Scenario 3: direct vs gateway vs nginx on `synthetic:5`, plus relay capacity."""
    levels = list(args.levels)
    install_uvloop()

    root = Path(tempfile.mkdtemp(prefix="streamhost-bench-"))
    wrapper = instance_python_with_fake(root, FAKE_CONTAINER)
    nginx = None
    try:
        with gateway_process(root, str(wrapper)) as (gateway_url, state):
            # Batch limits above the concurrency, so no stream waits for a batch slot.
            deploy(
                gateway_url,
                "synthetic",
                {
                    "HF_MODEL_ID": "synthetic:5",
                    "MAX_BATCH_SIZE": "128",
                    "MAX_CONCURRENT_REQUESTS": "512",
                },
            )
            deploy(gateway_url, "fake", {"HF_MODEL_ID": "synthetic:0", "BENCH_FAKE_CONTAINER": "1"})
            store = Store.open(sqlite_url(state))
            instances = {name: store.list_instances(name)[0] for name in ("synthetic", "fake")}
            store.close()
            if args.nginx:
                nginx = start_nginx(
                    root / "nginx", instances["synthetic"].port, instances["fake"].port
                )

            def targets(name: str) -> dict[str, dict]:
                out = direct_and_gateway(gateway_url, name, instances[name])
                if nginx is not None:
                    out["nginx"] = {
                        "url": f"http://127.0.0.1:{nginx[1]}/{name}/invocations",
                        "headers": out["direct"]["headers"],  # nginx passes them on
                        "kind": "sse",
                    }
                return out

            def body(tokens: int) -> bytes:
                return json.dumps(
                    {"inputs": "bench", "parameters": {"max_new_tokens": tokens}, "stream": True}
                ).encode()

            results: dict[tuple[str, int, str], list[Run]] = {}
            # (label, instance, concurrency, tokens, whether a steady closed loop)
            plans = [("synthetic:5", "synthetic", c, args.tokens, False) for c in levels]
            clients, steady_tokens, streams_each = args.steady
            if clients:
                plans.append(("synthetic:5 steady", "synthetic", clients, steady_tokens, True))
            plans.append(("relay capacity", "fake", 64, args.capacity_tokens, False))
            for repeat in range(args.repeats):
                for label, name, concurrency, tokens, closed_loop in plans:
                    # A single stream gives one TTFB sample: run several in a row.
                    rounds = args.single_rounds if concurrency == 1 else 1
                    for path, target in targets(name).items():
                        if closed_loop:
                            run = asyncio.run(
                                steady(target, concurrency, body(tokens), tokens, streams_each)
                            )
                        else:
                            run = asyncio.run(scenario(target, concurrency, body(tokens), rounds))
                        results.setdefault((label, concurrency, path), []).append(run)
                    if concurrency == 1 and args.ttfb_streams:
                        # The 1-stream TTFB from many short streams, the paths taking turns, so
                        # that each path sees the same moments of a shared machine.
                        series = asyncio.run(ttfb_series(targets(name), body(2), args.ttfb_streams))
                        for path, samples in series.items():
                            results[(label, concurrency, path)][-1].ttfb = samples
                if progress:
                    progress(f"gateway relay: repeat {repeat + 1}/{args.repeats} done")
            return report(results, plans)
    finally:
        if nginx is not None:
            nginx[0].send_signal(signal.SIGQUIT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                nginx[0].wait(10)
        shutil.rmtree(root, ignore_errors=True)


def report(results: dict, plans: list) -> Table:
    """Medians per scenario and path, and the gateway's and nginx's additions to direct."""

    def med(runs: list[Run], metric) -> float:
        return statistics.median(metric(run) for run in runs)

    def ttfb(run: Run) -> float:
        return percentile(run.ttfb, 0.5) * 1000

    def itl50(run: Run) -> float:
        return percentile(run.gaps, 0.5) * 1000

    def itl99(run: Run) -> float:
        return percentile(run.gaps, 0.99) * 1000

    def rate(run: Run) -> float:
        return run.rate

    table = Table(
        "gateway",
        "Gateway relay: direct to the instance vs through the gateway vs nginx "
        "(`proxy_buffering off`); medians",
        [
            "scenario",
            "streams",
            "path",
            "TTFB p50 ms",
            "ITL p50 ms",
            "ITL p99 ms",
            "events/s",
            "added TTFB p50 ms",
            "added ITL p50 ms",
            "events/s / direct",
        ],
    )
    for label, _, concurrency, _, _ in plans:
        direct = results[(label, concurrency, "direct")]
        for path in ("direct", "gateway", "nginx"):
            runs = results.get((label, concurrency, path))
            if not runs:
                continue
            saturated = label == "relay capacity"  # latency there is queueing, not relay
            table.rows.append(
                [
                    label,
                    concurrency,
                    path,
                    "-" if saturated else med(runs, ttfb),
                    "-" if saturated else med(runs, itl50),
                    "-" if saturated else med(runs, itl99),
                    med(runs, rate),
                    "-"
                    if saturated or path == "direct"
                    else f"{med(runs, ttfb) - med(direct, ttfb):+.3f}",
                    "-"
                    if saturated or path == "direct"
                    else f"{med(runs, itl50) - med(direct, itl50):+.3f}",
                    f"{med(runs, rate) / med(direct, rate):.2f}",
                ]
            )
    return table


# -- scenario 4: end to end through the gateway ---------------------------------------------


async def _tgi_stream(session, url: str, headers: dict, body: bytes, eventstream: bool):
    """One TGI-format stream, direct (SSE) or through the gateway (event stream of SSE)."""
    from streamhost.bench.loadgen import StreamTimer
    from streamhost.client.eventstream import EventStreamDecoder

    timer = StreamTimer("tgi")
    decoder = EventStreamDecoder() if eventstream else None
    async with session.post(url, data=body, headers=headers) as response:
        if response.status != 200:
            timer.result.error = f"HTTP {response.status}"
            return timer.result
        async for chunk, _ in response.content.iter_chunks():
            now = time.perf_counter()
            for payload in decoder.feed(chunk) if decoder is not None else [chunk]:
                timer.feed(payload, now)
    return timer.finish()


async def _closed_loop(target: dict, bodies: list[bytes], concurrency: int, total: int):
    limit = asyncio.Semaphore(concurrency)
    async with client_session() as session:

        async def one(i: int):
            body = bodies[i % len(bodies)]
            async with limit:
                return await _tgi_stream(
                    session,
                    target["url"],
                    target["headers"](body),
                    body,
                    target["kind"] == "eventstream",
                )

        started = time.perf_counter()
        results = await asyncio.gather(*(one(i) for i in range(total)))
        return list(results), time.perf_counter() - started


def run_e2e(
    levels: tuple[int, ...] = (1, 8, 32, 64),
    new_tokens: int = 64,
    repeats: int = 3,
    requests: int = 0,
    progress=None,
    provisioner: str = "local",
) -> Table:
    """Scenario 4: the `tiny` model streamed through the gateway vs direct to its instance.

    The gateway path sends exactly what boto3's `invoke_endpoint_with_response_stream`
    sends (SigV4-signed, event-stream response), from an aiohttp client so that the
    client's own parsing does not dominate a 2-core machine. With `provisioner="ray"` a
    second gateway runs its instance as an actor on a one-node Ray cluster on this machine,
    measured in the same interleaved rounds ("gateway on Ray"), and each endpoint's
    creation (CreateEndpoint to InService) is timed.
    """
    from streamhost.bench.metrics import summarize

    table = Table(
        "e2e",
        f"End to end: `tiny` through the gateway (SageMaker runtime, event stream) vs direct to "
        f"the instance; {new_tokens} new tokens, closed loop, median of {repeats}",
        [
            "concurrency",
            "path",
            "output tok/s",
            "TTFT p50 ms",
            "TTFT p99 ms",
            "ITL p50 ms",
            "E2E p50 ms",
            "failed",
            "gateway / direct tok/s",
        ],
    )
    root = Path(tempfile.mkdtemp(prefix="streamhost-e2e-"))
    environment = {"HF_MODEL_ID": "tiny", "MAX_CONCURRENT_REQUESTS": "512"}
    created: dict[str, float] = {}
    try:
        with contextlib.ExitStack() as stack:
            gateway_url, state = stack.enter_context(gateway_process(root, sys.executable))
            created["gateway"] = deploy(gateway_url, "tiny", environment)
            store = Store.open(sqlite_url(state))
            record = store.list_instances("tiny")[0]
            store.close()
            targets = direct_and_gateway(gateway_url, "tiny", record)
            if provisioner == "ray":
                address = stack.enter_context(_ray_cluster())
                ray_root = root / "ray"
                ray_root.mkdir()
                ray_url, _ = stack.enter_context(gateway_process(ray_root, sys.executable, address))
                created["gateway on Ray"] = deploy(ray_url, "tiny", environment)
                stream_url = f"{ray_url}/endpoints/tiny/invocations-response-stream"
                targets["gateway on Ray"] = {
                    "url": stream_url,
                    "headers": signer(stream_url),
                    "kind": "eventstream",
                }
            bodies = [
                json.dumps(
                    {
                        "inputs": f"request {i}: tell me about streaming",
                        "parameters": {
                            "max_new_tokens": new_tokens,
                            "ignore_eos": True,
                            "details": True,
                            "return_full_text": False,
                        },
                        "stream": True,
                    }
                ).encode()
                for i in range(16)
            ]
            for target in targets.values():
                asyncio.run(_closed_loop(target, bodies, 4, 8))  # warm-up
            runs: dict[tuple[int, str], list] = {}
            for c in levels:
                total = requests or max(3 * c, 6)
                for rep in range(repeats):
                    for path, target in targets.items():
                        results, duration = asyncio.run(_closed_loop(target, bodies, c, total))
                        runs.setdefault((c, path), []).append(summarize(results, duration))
                    if progress:
                        progress(f"e2e c={c}: run {rep + 1}/{repeats}")
            for c in levels:
                direct_tps = statistics.median(s.output_throughput for s in runs[(c, "direct")])
                for path in targets:
                    summaries = runs[(c, path)]
                    tps = statistics.median(s.output_throughput for s in summaries)
                    table.rows.append(
                        [
                            c,
                            path,
                            tps,
                            statistics.median(s.ttft["p50"] for s in summaries),
                            statistics.median(s.ttft["p99"] for s in summaries),
                            statistics.median(s.itl["p50"] for s in summaries),
                            statistics.median(s.e2e["p50"] for s in summaries),
                            statistics.median(s.failed for s in summaries),
                            f"{tps / direct_tps:.1%}" if path != "direct" else "-",
                        ]
                    )
                    table.series.setdefault("output tok/s", {}).setdefault(path, []).append(tps)
                    table.series.setdefault("TTFT p50", {}).setdefault(path, []).append(
                        statistics.median(s.ttft["p50"] for s in summaries)
                    )
            table.series["x"] = {"concurrency": [float(c) for c in levels]}
            if "gateway on Ray" in targets:
                table.notes.extend(_ray_notes(runs, levels, created))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return table


@contextlib.contextmanager
def _ray_cluster():
    """A one-node Ray cluster on 127.0.0.1 for the e2e scenario: yields its address."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # this machine only: loopback
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    try:
        yield cluster.address
    finally:
        cluster.shutdown()


def _ray_notes(runs: dict, levels: tuple[int, ...], created: dict[str, float]) -> list[str]:
    """The Ray gateway against the local one: the targets' terms."""
    notes = []
    for c in levels:
        local, ray = runs[(c, "gateway")], runs[(c, "gateway on Ray")]
        tps = statistics.median(s.output_throughput for s in ray) / max(
            statistics.median(s.output_throughput for s in local), 1e-9
        )
        ttft = statistics.median(s.ttft["p50"] for s in ray) - statistics.median(
            s.ttft["p50"] for s in local
        )
        notes.append(
            f"concurrency {c}: gateway on Ray / local gateway tok/s = {tps:.1%}, "
            f"TTFT p50 {ttft:+.1f} ms"
        )
    notes.append(
        "CreateEndpoint to InService: local "
        f"{created['gateway']:.1f} s, on Ray {created['gateway on Ray']:.1f} s "
        f"({created['gateway on Ray'] - created['gateway']:+.1f} s)"
    )
    return notes
