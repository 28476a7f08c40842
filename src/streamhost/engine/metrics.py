"""Engine metrics: plain numbers the servers export (Prometheus rendering lives there)."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

from streamhost.engine.types import FinishReason

# TGI's duration buckets: 35 geometric buckets from 0.1 ms, factor 1.5.
DURATION_BUCKETS = tuple(0.0001 * 1.5**i for i in range(35))


@dataclass
class Histogram:
    """A cumulative histogram in Prometheus' shape."""

    buckets: tuple[float, ...] = DURATION_BUCKETS
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        """Record one observation."""
        self.total += value
        self.count += 1
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
                break


@dataclass
class EngineMetrics:
    """Counters, gauges and histograms updated by the scheduler thread."""

    queue_size: int = 0
    batch_size: int = 0
    requests: int = 0
    generated_tokens: int = 0
    finish_reasons: collections.Counter = field(default_factory=collections.Counter)
    prefill_duration: Histogram = field(default_factory=Histogram)
    decode_duration: Histogram = field(default_factory=Histogram)
    ttft: Histogram = field(default_factory=Histogram)
    prefill_steps: int = 0
    decode_steps: int = 0

    def observe_prefill(self, seconds: float, rows: int) -> None:
        """Record a prefill forward over ``rows`` new requests."""
        self.prefill_steps += 1
        self.prefill_duration.observe(seconds)

    def observe_decode(self, seconds: float, rows: int) -> None:
        """Record a decode step over ``rows`` running requests."""
        self.decode_steps += 1
        self.decode_duration.observe(seconds)

    def observe_ttft(self, seconds: float) -> None:
        """Record a request's time to first token (from submission)."""
        self.ttft.observe(seconds)

    def finished(self, reason: FinishReason) -> None:
        """Count a finished request by its finish reason."""
        self.finish_reasons[reason.value] += 1
