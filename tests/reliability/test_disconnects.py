"""Clients that hang up at random points: every generation is cancelled, the instances'
running and queued counts return to zero, and no connection, file or process is leaked."""

from __future__ import annotations

import asyncio
import random

import aiohttp
import pytest

from tests.harness import (
    GatewayProcess,
    assert_no_model_servers,
    create_synthetic_endpoint,
    delete_endpoint,
    wait_for,
)

from .streaming import SOAK, connector, instance_metric, open_fds, report, stream_tokens

pytestmark = pytest.mark.reliability

STREAMS = 500 if SOAK else 150
CONCURRENCY = 50
TOKENS = 100


def footprint(gateway: GatewayProcess, records: list) -> dict[str, int]:
    """Open file descriptors of the gateway and of each instance."""
    return {"gateway": open_fds(gateway.pid)} | {r.instance_id: open_fds(r.pid) for r in records}


async def hang_ups(gateway: GatewayProcess, count: int) -> dict[str, int]:
    rng = random.Random(7)
    limit = asyncio.Semaphore(CONCURRENCY)
    kinds = {"before the answer": 0, "mid-stream": 0, "never": 0}

    async def one(http: aiohttp.ClientSession) -> None:
        roll = rng.random()
        async with limit:
            if roll < 0.2:
                kinds["before the answer"] += 1
                task = asyncio.create_task(stream_tokens(http, gateway.url, "flaky", TOKENS))
                await asyncio.sleep(rng.uniform(0, 0.05))
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            elif roll < 0.8:
                kinds["mid-stream"] += 1
                stop = rng.randint(1, TOKENS - 1)
                outcome = await stream_tokens(http, gateway.url, "flaky", TOKENS, stop_after=stop)
                assert outcome.in_order() and len(outcome.tokens) >= stop
            else:
                kinds["never"] += 1
                outcome = await stream_tokens(http, gateway.url, "flaky", TOKENS)
                assert outcome.complete and outcome.in_order()

    async with aiohttp.ClientSession(connector=connector()) as http:
        await asyncio.gather(*(one(http) for _ in range(count)))
    return kinds


async def full_streams(gateway: GatewayProcess, count: int) -> list:
    async with aiohttp.ClientSession(connector=connector()) as http:
        return await asyncio.gather(
            *(stream_tokens(http, gateway.url, "flaky", 20) for _ in range(count))
        )


def test_random_hang_ups_leave_no_running_request_and_no_leak(tmp_path):
    gateway = GatewayProcess(tmp_path / "state").start()
    try:
        sm = gateway.sm()
        create_synthetic_endpoint(sm, "flaky", count=2, delay_ms=10)
        records = gateway.instances("flaky")
        # Warm-up at the same concurrency: the gateway's connection pool reaches its size.
        assert all(o.complete for o in asyncio.run(full_streams(gateway, CONCURRENCY)))
        before = footprint(gateway, records)

        kinds = asyncio.run(hang_ups(gateway, STREAMS))

        def idle() -> bool:
            return all(
                instance_metric(r, "tgi_batch_current_size") == 0
                and instance_metric(r, "tgi_queue_size") == 0
                for r in records
            )

        wait_for(idle, timeout=10, what="every generation to be cancelled")
        generated = sum(instance_metric(r, "streamhost_generated_tokens") for r in records)
        after = footprint(gateway, records)
        for name, count in after.items():
            assert count <= before[name] + 8, f"{name}: {before[name]} → {count} open files"
        assert [r.pid for r in gateway.instances("flaky")] == [r.pid for r in records]
        assert all(not p.children() for p in gateway.model_servers())
        # Still serving normally afterwards.
        assert all(o.complete and o.in_order() for o in asyncio.run(full_streams(gateway, 20)))
        report(
            "random disconnects",
            streams=STREAMS,
            hang_ups=kinds,
            tokens_generated=generated,
            tokens_if_none_cancelled=CONCURRENCY * 20 + STREAMS * TOKENS,
            fds_before=before,
            fds_after=after,
        )
        delete_endpoint(sm, "flaky")
    finally:
        gateway.stop()
        assert_no_model_servers(tmp_path)
