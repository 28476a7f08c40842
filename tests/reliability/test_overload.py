"""Overload: beyond the instances' concurrency limit, requests are refused at once with
`ThrottlingException` (429, retried by botocore), nothing queues without bound, and the
endpoint serves again the moment load drops."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from botocore.exceptions import ClientError

from tests.harness import (
    GatewayProcess,
    assert_no_model_servers,
    create_synthetic_endpoint,
    delete_endpoint,
    tgi_body,
    wait_for,
)

from .streaming import connector, instance_metric, percentile, report, stream_tokens

pytestmark = pytest.mark.reliability

LIMIT = 4  # MAX_CONCURRENT_REQUESTS of each of the two instances
EXTRA = 40


@pytest.fixture
def crowded(tmp_path):
    gateway = GatewayProcess(tmp_path / "state").start()
    try:
        create_synthetic_endpoint(
            gateway.sm(),
            "crowded",
            count=2,
            environment={
                "HF_MODEL_ID": "synthetic:50",
                "MAX_CONCURRENT_REQUESTS": str(LIMIT),
                "MAX_BATCH_SIZE": str(LIMIT),
            },
        )
        yield gateway
        delete_endpoint(gateway.sm(), "crowded")
    finally:
        gateway.stop()
        assert_no_model_servers(tmp_path)


def busy(gateway: GatewayProcess) -> list[float]:
    """Requests each instance holds (running + queued)."""
    return [
        instance_metric(r, "tgi_batch_current_size") + instance_metric(r, "tgi_queue_size")
        for r in gateway.instances("crowded")
    ]


async def overload(gateway: GatewayProcess) -> dict:
    figures: dict = {}
    async with aiohttp.ClientSession(connector=connector()) as http:
        # Fill every slot of both instances with long streams.
        holders = [
            asyncio.create_task(stream_tokens(http, gateway.url, "crowded", 2000))
            for _ in range(2 * LIMIT)
        ]
        await asyncio.to_thread(
            wait_for, lambda: busy(gateway) == [LIMIT, LIMIT], what="both instances to be full"
        )

        async def refused() -> tuple[float, str | None, str]:
            started = time.monotonic()
            outcome = await stream_tokens(http, gateway.url, "crowded", 5)
            return time.monotonic() - started, outcome.error, outcome.message

        answers = await asyncio.gather(*(refused() for _ in range(EXTRA)))
        assert {error for _, error, _ in answers} == {"ThrottlingException"}
        assert "Model is overloaded" in answers[0][2]
        latencies = [seconds for seconds, _, _ in answers]
        figures["refusal_ms_p50_p99"] = (
            percentile(latencies, 50) * 1e3,
            percentile(latencies, 99) * 1e3,
        )
        assert percentile(latencies, 99) < 2.0
        # Nothing was queued behind the full batches.
        assert busy(gateway) == [LIMIT, LIMIT]

        # botocore sees a throttling error and retries it (standard mode: 3 attempts).
        smr = gateway.smr(retries={"mode": "standard", "total_max_attempts": 3})
        with pytest.raises(ClientError) as raised:
            await asyncio.to_thread(
                smr.invoke_endpoint,
                EndpointName="crowded",
                Body=tgi_body(tokens=5).replace(b"true", b"false"),
            )
        error = raised.value.response
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 429
        assert error["Error"]["Code"] == "ThrottlingException"
        assert error["ResponseMetadata"]["RetryAttempts"] == 2

        # Load drops: the holders hang up; the very next request is served.
        dropped = time.monotonic()
        for holder in holders:
            holder.cancel()
        await asyncio.gather(*holders, return_exceptions=True)
        while True:
            outcome = await stream_tokens(http, gateway.url, "crowded", 5)
            if outcome.complete:
                break
            assert outcome.error == "ThrottlingException"
            assert time.monotonic() - dropped < 10, "the endpoint did not recover"
            await asyncio.sleep(0.02)
        figures["recovered_after_ms"] = (time.monotonic() - dropped) * 1e3
        served = await asyncio.gather(
            *(stream_tokens(http, gateway.url, "crowded", 5) for _ in range(2 * LIMIT))
        )
        assert all(o.complete and o.in_order() for o in served)
    return figures


def test_requests_beyond_the_limit_are_throttled_at_once_and_service_resumes(crowded):
    figures = asyncio.run(overload(crowded))
    report("overload", limit_per_instance=LIMIT, instances=2, extra_requests=EXTRA, **figures)
