"""What the endpoint metrics cost on the request path, and how fast the autoscaler reacts.

1. Recording cost: the CPU time of what a request adds to the gateway's path once it ends
   (`Router.up_count` and `Metrics.invocation`, the runtime's `_measure`), and what each
   relayed chunk adds (counting it, and the first-byte check), by `time.process_time` over
   many calls; medians of `--repeats` runs.
2. Reaction time: `streamhost gateway --autoscaling-time-scale F` (a real gateway process)
   with a `synthetic:5` endpoint of 1 instance, registered 1–3 with a target tracking
   policy on `SageMakerVariantConcurrentRequestsPerModelHighResolution` at 1.0; 4 streams
   start at once. Measured: from the load's start to the scale-out activity, and to 3
   instances in service; in seconds and in the policy's (scaled) 10 s periods.

    .venv/bin/python benchmarks/autoscaling.py --repeats 3

The report goes to stdout and to `benchmarks/results/autoscaling.md`.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import boto3
from botocore.config import Config

from streamhost.deploy import DeploySpec, deploy
from streamhost.gateway.metrics import Metrics
from streamhost.gateway.router import Instance, Router, Variant

RESOURCE = "endpoint/{}/variant/AllTraffic"
DIMENSION = "sagemaker:variant:DesiredInstanceCount"


def per_request_us(calls: int) -> float:
    """CPU µs of one request's recording."""
    router = Router()
    instances = [Instance(f"i{n}", "AllTraffic", "127.0.0.1", 1000 + n, "s") for n in range(2)]
    router.publish("Bench", [Variant("AllTraffic", instances=instances)])
    metrics = Metrics()
    started = time.process_time()
    for _ in range(calls):
        metrics.invocation(
            "Bench",
            "AllTraffic",
            status=200,
            instances=router.up_count("Bench", "AllTraffic"),
            model=0.5,
            total=0.5005,
            first_byte=0.012,
            parts=64,
        )
    return (time.process_time() - started) / calls * 1e6


def per_chunk_ns(calls: int) -> float:
    """CPU ns a relayed chunk adds: its count, and the first-byte check."""

    class Relay:
        __slots__ = ("first_byte", "parts")

        def __init__(self) -> None:
            self.first_byte: float | None = 1.0
            self.parts = 0

    relay = Relay()
    started = time.process_time()
    for _ in range(calls):
        pass
    empty = time.process_time() - started
    started = time.process_time()
    for _ in range(calls):
        relay.parts += 1
        if relay.first_byte is None:
            relay.first_byte = time.monotonic()
    return max(time.process_time() - started - empty, 0.0) / calls * 1e9


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def client(service: str, url: str) -> object:
    return boto3.session.Session().client(
        service,
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        config=Config(retries={"total_max_attempts": 1}, read_timeout=300),
    )


def wait(condition, timeout: float, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    raise TimeoutError("timed out")


def reaction(url: str, name: str) -> tuple[float, float]:
    """(s to the scale-out activity, s to 3 instances in service) for one endpoint."""
    sm, smr = client("sagemaker", url), client("sagemaker-runtime", url)
    aas = client("application-autoscaling", url)
    deploy(sm, DeploySpec(name, model="synthetic:5", instance_type="ml.m5.large"))
    aas.register_scalable_target(
        ServiceNamespace="sagemaker",
        ResourceId=RESOURCE.format(name),
        ScalableDimension=DIMENSION,
        MinCapacity=1,
        MaxCapacity=3,
    )
    aas.put_scaling_policy(
        PolicyName="concurrency",
        ServiceNamespace="sagemaker",
        ResourceId=RESOURCE.format(name),
        ScalableDimension=DIMENSION,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": 1.0,
            "PredefinedMetricSpecification": {
                "PredefinedMetricType": "SageMakerVariantConcurrentRequestsPerModelHighResolution"
            },
        },
    )
    body = b'{"inputs": "go", "parameters": {"max_new_tokens": 400}, "stream": true}'
    stop = threading.Event()

    def stream() -> None:  # one client: a 2 s stream after another until told to stop
        while not stop.is_set():
            response = smr.invoke_endpoint_with_response_stream(EndpointName=name, Body=body)
            for _ in response["Body"]:
                pass

    threads = [threading.Thread(target=stream, daemon=True) for _ in range(4)]
    started = time.monotonic()
    for thread in threads:
        thread.start()

    def activity() -> bool:
        found = aas.describe_scaling_activities(
            ServiceNamespace="sagemaker", ResourceId=RESOURCE.format(name)
        )["ScalingActivities"]
        return bool(found)

    wait(activity, 300)
    decided = time.monotonic() - started

    def three() -> bool:
        variant = sm.describe_endpoint(EndpointName=name)["ProductionVariants"][0]
        return variant.get("CurrentInstanceCount") == 3

    wait(three, 300)
    served = time.monotonic() - started
    stop.set()
    for thread in threads:
        thread.join()
    sm.delete_endpoint(EndpointName=name)
    return decided, served


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--time-scale", type=float, default=0.1)
    parser.add_argument("--out", default="benchmarks/results/autoscaling.md")
    args = parser.parse_args()

    request = statistics.median(per_request_us(args.calls) for _ in range(args.repeats))
    chunk = statistics.median(per_chunk_ns(args.calls * 10) for _ in range(args.repeats))

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as state:
        gateway = subprocess.Popen(
            [
                *[sys.executable, "-m", "streamhost.cli", "--log-level", "warning"],
                *["gateway", "--no-auth", "--port", str(port)],
                *["--state", str(Path(state) / "g.db")],
                *["--autoscaling-time-scale", str(args.time_scale)],
            ],
            env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        )
        try:
            wait(lambda: _ping(url), 60)
            runs = [reaction(url, f"bench-{n}") for n in range(args.repeats)]
        finally:
            gateway.terminate()
            gateway.wait(60)
    period = max(1, round(10 * args.time_scale))
    decided = statistics.median(r[0] for r in runs)
    served = statistics.median(r[1] for r in runs)
    lines = [
        f"<!-- generated by `python benchmarks/autoscaling.py --repeats {args.repeats}` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} -->",
        "",
        "| figure | median | runs |",
        "|---|---|---|",
        f"| recording, per request (CPU) | {request:.2f} µs | {args.repeats} × {args.calls:,} calls |",
        f"| recording, per relayed chunk (CPU) | {chunk:.0f} ns | {args.repeats} × {args.calls * 10:,} |",
        f"| load start → scale-out activity (time scale {args.time_scale:g}, {period} s periods) "
        f"| {decided:.1f} s = {decided / period:.1f} periods | "
        + ", ".join(f"{r[0]:.1f}" for r in runs)
        + " |",
        f"| load start → 3 instances in service | {served:.1f} s = {served / period:.1f} periods | "
        + ", ".join(f"{r[1]:.1f}" for r in runs)
        + " |",
    ]
    report = "\n".join(lines) + "\n"
    print(report)
    Path(args.out).write_text(report)
    return 0


def _ping(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url + "/ping", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
