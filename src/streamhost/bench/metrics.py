"""Aggregate request timings into vLLM's serving metrics."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from streamhost.bench.loadgen import RequestResult


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile (linear interpolation, as numpy's default); 0 for no data."""
    if not values:
        return 0.0
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


@dataclass
class Summary:
    """One run's metrics; latencies in milliseconds."""

    completed: int
    failed: int
    duration: float
    request_throughput: float
    output_throughput: float
    ttft: dict[str, float]
    tpot: dict[str, float]
    itl: dict[str, float]
    e2e: dict[str, float]
    goodput: float | None = None


def _dist(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {
        "mean": statistics.fmean(ms) if ms else 0.0,
        "p50": percentile(ms, 50),
        "p90": percentile(ms, 90),
        "p99": percentile(ms, 99),
    }


def summarize(
    results: list[RequestResult],
    duration: float,
    slo_ttft_ms: float | None = None,
    slo_tpot_ms: float | None = None,
) -> Summary:
    """vLLM's definitions: TPOT excludes the first token; ITL pools every gap of every request."""
    ok = [r for r in results if r.ok]
    tpots = [(r.latency - r.ttft) / (r.output_tokens - 1) for r in ok if r.output_tokens > 1]
    goodput = None
    if slo_ttft_ms is not None or slo_tpot_ms is not None:
        good = 0
        for r in ok:
            tpot = (r.latency - r.ttft) / (r.output_tokens - 1) if r.output_tokens > 1 else 0.0
            if (slo_ttft_ms is None or r.ttft * 1000 <= slo_ttft_ms) and (
                slo_tpot_ms is None or tpot * 1000 <= slo_tpot_ms
            ):
                good += 1
        goodput = good / duration if duration else 0.0
    return Summary(
        completed=len(ok),
        failed=len(results) - len(ok),
        duration=duration,
        request_throughput=len(ok) / duration if duration else 0.0,
        output_throughput=sum(r.output_tokens for r in ok) / duration if duration else 0.0,
        ttft=_dist([r.ttft for r in ok]),
        tpot=_dist(tpots),
        itl=_dist([g for r in ok for g in r.itl]),
        e2e=_dist([r.latency for r in ok]),
        goodput=goodput,
    )
