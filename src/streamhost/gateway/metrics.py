"""SageMaker's endpoint metrics, from the gateway's own measurements.

Namespace `AWS/SageMaker`, dimensions `EndpointName` and `VariantName`, defined as
SageMaker defines them:

- `Invocations`: requests sent to a variant's model (1 per request; `Sum` counts them).
- `InvocationsPerInstance`: 1/n per request, n the variant's instances at that moment.
- `Invocation4XXErrors`, `Invocation5XXErrors`: 1 when the model answered 4xx / 5xx, else 0
  (`Average` is the error rate). `InvocationModelErrors`: 1 when the model's answer was not
  2xx, including a broken connection and a time limit passed.
- `ModelLatency` (µs): from sending the request to the model until its response is
  complete; for a stream, until the model's last byte reaches the gateway.
- `OverheadLatency` (µs): from the gateway receiving the request until it has sent the
  answer, minus `ModelLatency`.
- `TimeToFirstByte` (µs, streamhost's own): from the gateway receiving the request until
  it sends the first byte of the answer's body: for a stream, its first PayloadPart (the
  first token, as the client sees it less the network).
- `PayloadParts` (streamhost's own): a stream's PayloadPart events, one per chunk the
  model server sent (one per token for the built-in and vLLM servers), so its `Sum` per
  second is the tokens per second the variant streams.
- `ConcurrentRequestsPerModel` (high resolution): each second, each instance's requests in
  flight; `Average` is the mean per model, `Maximum` the busiest.
- `InstanceCount` (streamhost's own): each second, the variant's instances in service.
- `ModelSetupTime` (µs): an instance's launch until its first passed health check.

Datapoints are aggregated (`SampleCount`, `Sum`, `Minimum`, `Maximum`) into 10 s buckets
held in memory for 3 h: what the scaler reads every few seconds and the charts show. Whole
minutes are also written to the store and kept a day, so the history survives a restart
at a resolution a day's worth of which stays small (1,440 rows per metric and variant).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .router import Router
    from .store import Store

__all__ = ["METRICS", "NAMESPACE", "Metrics", "Stat"]

log = logging.getLogger(__name__)

NAMESPACE = "AWS/SageMaker"
RESOLUTION = 10  # seconds in an in-memory bucket
MEMORY_SPAN = 3 * 3600  # seconds of buckets kept in memory
STORED_RESOLUTION = 60  # seconds in a stored bucket
STORED_SPAN = 24 * 3600  # seconds of stored buckets kept
SAMPLE_INTERVAL = 1.0  # seconds between samples of concurrency and instance count
_SAMPLED = frozenset({"ConcurrentRequestsPerModel", "InstanceCount"})
_WORD = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")

# Each metric's CloudWatch unit.
METRICS = {
    "Invocations": "None",
    "InvocationsPerInstance": "None",
    "Invocation4XXErrors": "None",
    "Invocation5XXErrors": "None",
    "InvocationModelErrors": "None",
    "ModelLatency": "Microseconds",
    "OverheadLatency": "Microseconds",
    "TimeToFirstByte": "Microseconds",
    "PayloadParts": "Count",
    "ConcurrentRequestsPerModel": "None",
    "InstanceCount": "None",
    "ModelSetupTime": "Microseconds",
}


class Stat:
    """The statistics of one bucket's datapoints."""

    __slots__ = ("count", "high", "last", "low", "total")

    def __init__(
        self, count: float = 0, total: float = 0.0, low: float = math.inf, high: float = -math.inf
    ) -> None:
        self.count = count
        self.total = total
        self.low = low
        self.high = high
        self.last = 0.0

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.low = min(self.low, value)
        self.high = max(self.high, value)

    def merge(self, other: Stat) -> None:
        self.count += other.count
        self.total += other.total
        self.low = min(self.low, other.low)
        self.high = max(self.high, other.high)

    def statistic(self, name: str) -> float:
        """CloudWatch's `SampleCount`, `Sum`, `Average`, `Minimum` or `Maximum`."""
        if name == "SampleCount":
            return float(self.count)
        if name == "Sum":
            return self.total
        if name == "Average":
            return self.total / self.count if self.count else 0.0
        if name == "Minimum":
            return self.low
        if name == "Maximum":
            return self.high
        raise ValueError(name)


@dataclass(frozen=True)
class Series:
    """One metric of one variant (endpoint names as keys are lower-cased)."""

    endpoint: str
    variant: str
    metric: str


class Metrics:
    """Every variant's metrics: recorded by the runtime, the fleet and a sampler."""

    def __init__(
        self, store: Store | None = None, clock: Any = time.time, resolution: int = RESOLUTION
    ) -> None:
        self.store = store
        self.clock = clock
        self.resolution = resolution  # seconds in an in-memory bucket
        self._buckets: dict[Series, dict[int, Stat]] = {}
        self._totals: dict[Series, Stat] = {}  # since the gateway started, for Prometheus
        self._names: dict[str, str] = {}  # lower-cased endpoint → its name as spelled
        self._started = self.clock()
        # Minutes before this one are in the store (written by a gateway before this one).
        self._flushed = int(self._started // STORED_RESOLUTION * STORED_RESOLUTION)

    # -- recording ------------------------------------------------------------------------

    def add(
        self, endpoint: str, variant: str, metric: str, value: float, at: float | None = None
    ) -> None:
        """One datapoint."""
        key = endpoint.lower()
        self._names.setdefault(key, endpoint)
        series = Series(key, variant, metric)
        buckets = self._buckets.get(series)
        if buckets is None:
            buckets = self._buckets[series] = {}
        start = int((self.clock() if at is None else at) // self.resolution * self.resolution)
        stat = buckets.get(start)
        if stat is None:
            stat = buckets[start] = Stat()
        stat.add(value)
        total = self._totals.get(series)
        if total is None:
            total = self._totals[series] = Stat()
        total.add(value)
        total.last = value

    def invocation(
        self,
        endpoint: str,
        variant: str,
        *,
        status: int,
        instances: int,
        model: float,
        total: float,
        first_byte: float | None,
        parts: int | None = None,
    ) -> None:
        """One request a model got: its status (0: no answer, a broken connection or a
        time limit), the variant's instances, and its times in seconds."""
        now = self.clock()
        ok = 200 <= status < 300
        for metric, value in (
            ("Invocations", 1.0),
            ("InvocationsPerInstance", 1.0 / max(instances, 1)),
            ("Invocation4XXErrors", 1.0 if 400 <= status < 500 else 0.0),
            ("Invocation5XXErrors", 1.0 if 500 <= status < 600 else 0.0),
            ("InvocationModelErrors", 0.0 if ok else 1.0),
            ("ModelLatency", round(model * 1e6)),
            ("OverheadLatency", round(max(total - model, 0.0) * 1e6)),
        ):
            self.add(endpoint, variant, metric, value, now)
        if first_byte is not None:
            self.add(endpoint, variant, "TimeToFirstByte", round(first_byte * 1e6), now)
        if parts is not None:
            self.add(endpoint, variant, "PayloadParts", float(parts), now)

    def setup(self, endpoint: str, variant: str, seconds: float) -> None:
        """An instance passed its first health check `seconds` after its launch."""
        self.add(endpoint, variant, "ModelSetupTime", round(seconds * 1e6))

    def sample(self, router: Router) -> None:
        """Concurrency per model and instances in service, of every routed variant."""
        now = self.clock()
        for endpoint, variants in router.routes():
            for variant in variants:
                up = [i for i in variant.instances if i.up]
                self.add(endpoint, variant.name, "InstanceCount", float(len(up)), now)
                for instance in up:
                    self.add(
                        endpoint,
                        variant.name,
                        "ConcurrentRequestsPerModel",
                        float(instance.outstanding),
                        now,
                    )
                if up:  # Prometheus' gauge: the mean per model, not the last one's
                    series = Series(endpoint.lower(), variant.name, "ConcurrentRequestsPerModel")
                    self._totals[series].last = sum(i.outstanding for i in up) / len(up)

    async def run(self, router: Router) -> None:
        """Sample every second; write whole minutes to the store and forget old buckets."""
        while True:
            # Twice per bucket at least, so that no bucket of a sampled series is empty.
            await asyncio.sleep(min(SAMPLE_INTERVAL, self.resolution / 2))
            self.sample(router)
            now = self.clock()
            if now - self._flushed >= STORED_RESOLUTION:
                await self.flush(now)

    async def flush(self, now: float | None = None, *, final: bool = False) -> None:
        """Write the minutes that ended (`final`: and the one under way) into the store;
        drop buckets past their span."""
        now = self.clock() if now is None else now
        upto = int(now // STORED_RESOLUTION * STORED_RESOLUTION)
        if final:
            upto += STORED_RESOLUTION
        rows = []
        for series, buckets in self._buckets.items():
            minutes: dict[int, Stat] = {}
            for start, stat in buckets.items():
                minute = start // STORED_RESOLUTION * STORED_RESOLUTION
                if self._flushed <= minute < upto:
                    minutes.setdefault(minute, Stat()).merge(stat)
            rows += [(series, minute, stat) for minute, stat in minutes.items()]
        if self.store is not None and rows:
            try:
                await asyncio.to_thread(self.store.put_metrics, rows, upto - STORED_SPAN)
            except Exception:
                log.exception("cannot write endpoint metrics to the store")
        self._flushed = upto
        oldest = now - MEMORY_SPAN
        for buckets in self._buckets.values():
            for start in [s for s in buckets if s < oldest]:
                del buckets[start]

    # -- reading --------------------------------------------------------------------------

    def series(self) -> Iterator[tuple[str, str, str]]:
        """(endpoint name, variant, metric) of every series held in memory."""
        for series, buckets in self._buckets.items():
            if buckets:
                yield (
                    self._names.get(series.endpoint, series.endpoint),
                    series.variant,
                    series.metric,
                )

    async def statistics(
        self, endpoint: str, variant: str, metric: str, start: float, end: float, period: int
    ) -> list[tuple[int, Stat]]:
        """(period start, statistics) of each period in [start, end) that has datapoints,
        oldest first: from memory since this gateway started (3 h at most), before that
        from the store when the period is whole minutes."""
        series = Series(endpoint.lower(), variant, metric)
        periods: dict[int, Stat] = {}
        since = max(self.clock() - MEMORY_SPAN, self._started)
        since = since // STORED_RESOLUTION * STORED_RESOLUTION
        if start < since and self.store is not None and period % STORED_RESOLUTION == 0:
            rows = await asyncio.to_thread(
                self.store.metric_minutes, series, start, min(end, since)
            )
            for minute, stat in stats_of(rows):
                _into(periods, minute, period, stat)
        for bucket, stat in self._buckets.get(series, {}).items():
            if max(start, since) <= bucket < end:
                _into(periods, bucket, period, stat)
        return sorted(periods.items())

    def prometheus(self) -> str:
        """Every series since the gateway started, in Prometheus' text format: sampled
        ones as gauges of their latest value, the others as summaries (latencies in
        seconds)."""
        lines = []
        by_metric: dict[str, list[tuple[Series, Stat]]] = {}
        for series, stat in self._totals.items():
            by_metric.setdefault(series.metric, []).append((series, stat))
        for metric in sorted(by_metric):
            unit = METRICS[metric]
            name = "sagemaker_" + _snake(metric) + ("_seconds" if unit == "Microseconds" else "")
            scale = 1e-6 if unit == "Microseconds" else 1.0
            gauge = metric in _SAMPLED
            lines.append(f"# HELP {name} SageMaker's {metric} of each endpoint variant.")
            lines.append(f"# TYPE {name} {'gauge' if gauge else 'summary'}")
            for series, stat in sorted(
                by_metric[metric], key=lambda item: (item[0].endpoint, item[0].variant)
            ):
                labels = (
                    f'endpoint_name="{_label(self._names.get(series.endpoint, series.endpoint))}",'
                    f'variant_name="{_label(series.variant)}"'
                )
                if gauge:
                    lines.append(f"{name}{{{labels}}} {stat.last:g}")
                else:
                    lines.append(f"{name}_count{{{labels}}} {stat.count:g}")
                    lines.append(f"{name}_sum{{{labels}}} {stat.total * scale:.6g}")
        return "\n".join(lines) + "\n"


def _into(periods: dict[int, Stat], at: int, period: int, stat: Stat) -> None:
    # Periods are whole multiples of their length since the epoch (10:00:00, 10:01:00…).
    periods.setdefault(at // period * period, Stat()).merge(stat)


def _snake(name: str) -> str:
    return _WORD.sub("_", name).lower()


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def stats_of(rows: Iterable[tuple[int, float, float, float, float]]) -> Iterator[tuple[int, Stat]]:
    """Stored rows (minute, count, sum, min, max) as statistics."""
    for minute, count, total, low, high in rows:
        yield int(minute), Stat(count, total, low, high)
