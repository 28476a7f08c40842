"""Load and soak: many concurrent streams through one gateway, nothing lost, memory flat.

Every stream asks a `synthetic:100` instance for numbered tokens (token n is "n ", due
(n + 1) × 100 ms after the request arrived), so a lost, repeated or reordered chunk shows
in the sequence numbers, and the gap between chunks is known without load. CI runs
`SOAK_STREAMS` (200) closed-loop clients for `SOAK_SECONDS` (20 s); on demand, e.g.
`STREAMHOST_SOAK_SECONDS=600 STREAMHOST_SOAK_STREAMS=1000`.
"""

from __future__ import annotations

import asyncio
import random
import time

import aiohttp
import psutil
import pytest

from tests.harness import (
    GatewayProcess,
    assert_no_model_servers,
    create_synthetic_endpoint,
    delete_endpoint,
)

from .streaming import (
    SOAK_SECONDS,
    SOAK_STREAMS,
    Outcome,
    connector,
    expected_text,
    median,
    open_fds,
    percentile,
    report,
    sample_rss,
    stream_tokens,
)

pytestmark = pytest.mark.reliability

DELAY_MS = 100


async def unloaded_gaps(gateway: GatewayProcess, endpoint: str) -> list[float]:
    async with aiohttp.ClientSession(connector=connector()) as http:
        outcomes = await asyncio.gather(
            *(stream_tokens(http, gateway.url, endpoint, 30) for _ in range(2))
        )
    assert all(o.complete and o.in_order() for o in outcomes)
    return [gap for o in outcomes for gap in o.gaps()]


async def soak(
    gateway: GatewayProcess, endpoint: str, streams: int, seconds: float
) -> tuple[list[Outcome], dict[str, list]]:
    """`streams` clients, each streaming 30–60 tokens at a time until `seconds` pass."""
    pids = {"gateway": gateway.pid}
    pids |= {r.instance_id: r.pid for r in gateway.instances(endpoint)}
    samples: dict[str, list] = {}
    sampler = asyncio.create_task(sample_rss(pids, 0.5, samples))
    outcomes: list[Outcome] = []
    deadline = time.monotonic() + seconds
    ramp = min(2.0, seconds / 4)

    async def client(number: int, http: aiohttp.ClientSession) -> None:
        rng = random.Random(number)
        await asyncio.sleep(ramp * number / streams)
        while time.monotonic() < deadline:
            tokens = rng.randint(30, 60)
            outcomes.append(await stream_tokens(http, gateway.url, endpoint, tokens))

    try:
        async with aiohttp.ClientSession(connector=connector()) as http:
            await asyncio.gather(*(client(n, http) for n in range(streams)))
    finally:
        sampler.cancel()
    return outcomes, samples


def test_concurrent_streams_lose_nothing_and_gateway_memory_stays_flat(tmp_path):
    gateway = GatewayProcess(tmp_path / "state").start()
    try:
        sm = gateway.sm()
        create_synthetic_endpoint(
            sm,
            "soak",
            count=2,
            environment={
                "HF_MODEL_ID": f"synthetic:{DELAY_MS}",
                # Both instances together take every stream: none is refused as overload.
                "MAX_CONCURRENT_REQUESTS": str(SOAK_STREAMS),
                "MAX_BATCH_SIZE": str(SOAK_STREAMS),
            },
        )
        unloaded = asyncio.run(unloaded_gaps(gateway, "soak"))
        fds_before = open_fds(gateway.pid)
        cpu_before = sum(psutil.Process(gateway.pid).cpu_times()[:2])
        outcomes, samples = asyncio.run(soak(gateway, "soak", SOAK_STREAMS, SOAK_SECONDS))
        cpu = sum(psutil.Process(gateway.pid).cpu_times()[:2]) - cpu_before

        failed = [o for o in outcomes if not o.complete]
        assert not failed, (
            f"{len(failed)} streams failed, e.g. {failed[0].error}: {failed[0].message}"
        )
        for outcome in outcomes:
            assert outcome.in_order() and len(outcome.tokens) == outcome.asked
            assert outcome.generated_text == expected_text(outcome.asked)

        loaded = [gap for o in outcomes for gap in o.gaps()]
        chunks = sum(len(o.tokens) for o in outcomes)
        curve = [rss for _, rss in samples["gateway"]]
        quarter = max(len(curve) // 4, 1)
        warm, end = median(curve[quarter : 2 * quarter]), median(curve[-quarter:])
        report(
            "load",
            streams=SOAK_STREAMS,
            seconds=SOAK_SECONDS,
            completed=len(outcomes),
            chunks=chunks,
            gateway_cpu_ms_per_1000_chunks=1e6 * cpu / chunks,
            unloaded_gap_ms=(percentile(unloaded, 50) * 1e3, percentile(unloaded, 99) * 1e3),
            loaded_gap_ms=(percentile(loaded, 50) * 1e3, percentile(loaded, 99) * 1e3),
            gateway_rss_mib=[round(v, 1) for v in curve[:: max(len(curve) // 12, 1)]],
            gateway_rss_warm_end=(warm, end),
            gateway_fds=(fds_before, open_fds(gateway.pid)),
        )
        # Memory after warm-up: flat within allocator noise, not growing with streams served.
        assert end - warm < max(16.0, 0.1 * warm), f"gateway RSS grew {warm:.1f} → {end:.1f} MiB"
        # Chunks are relayed as they come: under load the median gap stays the model's.
        assert percentile(loaded, 50) < DELAY_MS / 1e3 * 1.5
        delete_endpoint(sm, "soak")
    finally:
        gateway.stop()
        assert_no_model_servers(tmp_path)
