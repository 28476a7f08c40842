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

    __slots__ = ("count", "high", "low", "total")

    def __init__(
        self,
        count: float = 0,
        total: float = 0.0,
        low: float = math.inf,
        high: float = -math.inf,
    ) -> None:
        self.count = count
        self.total = total
        self.low = low
        self.high = high

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        if value < self.low:
            self.low = value
        if value > self.high:
            self.high = value

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


class _Track:
    """A series' buckets (by start time, oldest first), what was pruned from them, and
    its latest sample (the gauges')."""

    __slots__ = ("buckets", "last", "pruned")

    def __init__(self) -> None:
        self.buckets: dict[int, Stat] = {}
        self.pruned = Stat()
        self.last = 0.0


def _put(buckets: dict[int, Stat], start: int, value: float) -> None:
    stat = buckets.get(start)
    if stat is None:
        buckets[start] = Stat(1, value, value, value)
    else:
        stat.add(value)


# What each request records, in the order `_Table.at` gives their buckets.
_REQUEST_METRICS = (
    "Invocations",
    "InvocationsPerInstance",
    "Invocation4XXErrors",
    "Invocation5XXErrors",
    "InvocationModelErrors",
    "ModelLatency",
    "OverheadLatency",
    "TimeToFirstByte",
    "PayloadParts",
)


class _Table:
    """A variant's tracks by metric, and the buckets its requests are recorded in now."""

    __slots__ = ("current", "start", "tracks")

    def __init__(self, tracks: dict[str, _Track]) -> None:
        self.tracks = tracks
        self.start = -1
        self.current: tuple[Stat, ...] = ()

    def at(self, start: int) -> tuple[Stat, ...]:
        """The request metrics' buckets starting at `start` (made, empty, if new)."""
        if start != self.start:
            stats = []
            for metric in _REQUEST_METRICS:
                buckets = self.tracks[metric].buckets
                stat = buckets.get(start)
                if stat is None:
                    stat = buckets[start] = Stat()
                stats.append(stat)
            self.start, self.current = start, tuple(stats)
        return self.current


class Metrics:
    """Every variant's metrics: recorded by the runtime, the fleet and a sampler.

    Recording is on the request path, so a variant's series are looked up once per request
    (by the names as given), and each datapoint is one bucket update; totals for Prometheus
    are summed when it asks."""

    def __init__(
        self, store: Store | None = None, clock: Any = time.time, resolution: int = RESOLUTION
    ) -> None:
        self.store = store
        self.clock = clock
        self.resolution = resolution  # seconds in an in-memory bucket
        self._tracks: dict[Series, _Track] = {}
        self._variants: dict[tuple[str, str], _Table] = {}  # by the names as spelled
        self._names: dict[str, str] = {}  # lower-cased endpoint → its name as spelled
        self._started = self.clock()
        # Minutes before this one are in the store (written by a gateway before this one).
        self._flushed = int(self._started // STORED_RESOLUTION * STORED_RESOLUTION)

    # -- recording ------------------------------------------------------------------------

    def _table(self, endpoint: str, variant: str) -> _Table:
        """A variant's tracks."""
        table = self._variants.get((endpoint, variant))
        if table is None:
            key = endpoint.lower()
            self._names.setdefault(key, endpoint)
            tracks = {}
            for metric in METRICS:
                series = Series(key, variant, metric)
                track = self._tracks.get(series)
                if track is None:
                    track = self._tracks[series] = _Track()
                tracks[metric] = track
            table = self._variants[(endpoint, variant)] = _Table(tracks)
        return table

    def add(
        self, endpoint: str, variant: str, metric: str, value: float, at: float | None = None
    ) -> None:
        """One datapoint."""
        at = self.clock() if at is None else at
        resolution = self.resolution
        buckets = self._table(endpoint, variant).tracks[metric].buckets
        _put(buckets, int(at // resolution * resolution), value)

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
        resolution = self.resolution
        start = int(self.clock() // resolution * resolution)
        table = self._variants.get((endpoint, variant)) or self._table(endpoint, variant)
        calls, per_instance, client, server, failed, model_us, overhead_us, first_us, chunks = (
            table.at(start)
        )
        calls.add(1.0)
        per_instance.add(1.0 / instances if instances > 0 else 1.0)
        client.add(1.0 if 400 <= status < 500 else 0.0)
        server.add(1.0 if 500 <= status < 600 else 0.0)
        failed.add(0.0 if 200 <= status < 300 else 1.0)
        model_us.add(int(model * 1e6 + 0.5))
        overhead_us.add(int(max(total - model, 0.0) * 1e6 + 0.5))
        if first_byte is not None:
            first_us.add(int(first_byte * 1e6 + 0.5))
        if parts is not None:
            chunks.add(float(parts))

    def setup(self, endpoint: str, variant: str, seconds: float) -> None:
        """An instance passed its first health check `seconds` after its launch."""
        self.add(endpoint, variant, "ModelSetupTime", round(seconds * 1e6))

    def sample(self, router: Router) -> None:
        """Concurrency per model and instances in service, of every routed variant."""
        now = self.clock()
        start = int(now // self.resolution * self.resolution)
        for endpoint, variants in router.routes():
            for variant in variants:
                up = [i for i in variant.instances if i.up]
                tracks = self._table(endpoint, variant.name).tracks
                count, concurrency = tracks["InstanceCount"], tracks["ConcurrentRequestsPerModel"]
                _put(count.buckets, start, float(len(up)))
                count.last = float(len(up))
                for instance in up:
                    _put(concurrency.buckets, start, float(instance.outstanding))
                # Prometheus' gauge: the mean per model.
                concurrency.last = sum(i.outstanding for i in up) / len(up) if up else 0.0

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
        for series, track in self._tracks.items():
            buckets = track.buckets
            minutes: dict[int, Stat] = {}
            # Buckets are made in time order: the newest are at the end.
            for start in reversed(buckets):
                minute = start // STORED_RESOLUTION * STORED_RESOLUTION
                if minute < self._flushed:
                    break
                if minute < upto and buckets[start].count:
                    minutes.setdefault(minute, Stat()).merge(buckets[start])
            rows += [(series, minute, stat) for minute, stat in minutes.items()]
        if self.store is not None and rows:
            try:
                await asyncio.to_thread(self.store.put_metrics, rows, upto - STORED_SPAN)
            except Exception:
                log.exception("cannot write endpoint metrics to the store")
        self._flushed = upto
        oldest = now - MEMORY_SPAN
        for track in self._tracks.values():
            buckets = track.buckets
            while buckets:
                start = next(iter(buckets))
                if start >= oldest:
                    break
                track.pruned.merge(buckets.pop(start))

    # -- reading --------------------------------------------------------------------------

    def series(self) -> Iterator[tuple[str, str, str]]:
        """(endpoint name, variant, metric) of every series held in memory."""
        for series, track in self._tracks.items():
            if any(stat.count for stat in track.buckets.values()):
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
        track = self._tracks.get(series)
        for bucket, stat in (track.buckets if track else {}).items():
            if max(start, since) <= bucket < end and stat.count:
                _into(periods, bucket, period, stat)
        return sorted(periods.items())

    def prometheus(self) -> str:
        """Every series since the gateway started, in Prometheus' text format: sampled
        ones as gauges of their latest value, the others as summaries (latencies in
        seconds)."""
        lines = []
        by_metric: dict[str, list[tuple[Series, _Track, Stat]]] = {}
        for series, track in self._tracks.items():
            total = Stat()
            total.merge(track.pruned)
            for stat in track.buckets.values():
                total.merge(stat)
            if total.count:
                by_metric.setdefault(series.metric, []).append((series, track, total))
        for metric in sorted(by_metric):
            unit = METRICS[metric]
            name = "sagemaker_" + _snake(metric) + ("_seconds" if unit == "Microseconds" else "")
            scale = 1e-6 if unit == "Microseconds" else 1.0
            gauge = metric in _SAMPLED
            lines.append(f"# HELP {name} SageMaker's {metric} of each endpoint variant.")
            lines.append(f"# TYPE {name} {'gauge' if gauge else 'summary'}")
            for series, track, stat in sorted(
                by_metric[metric], key=lambda item: (item[0].endpoint, item[0].variant)
            ):
                labels = (
                    f'endpoint_name="{_label(self._names.get(series.endpoint, series.endpoint))}",'
                    f'variant_name="{_label(series.variant)}"'
                )
                if gauge:
                    lines.append(f"{name}{{{labels}}} {track.last:g}")
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
