"""Prometheus text exposition of the server's and engine's metrics, with TGI's names."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

from streamhost.engine import EngineMetrics, Histogram


@dataclass
class RequestStats:
    """Request-level counters kept by the HTTP layer."""

    count: int = 0
    success: int = 0
    failure: collections.Counter = field(default_factory=collections.Counter)
    duration: Histogram = field(default_factory=Histogram)


def _histogram(name: str, help_text: str, h: Histogram, labels: str = "") -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
    running = 0
    sep = "," if labels else ""
    for bound, count in zip(h.buckets, h.counts, strict=True):
        running += count
        lines.append(f'{name}_bucket{{{labels}{sep}le="{bound:.6g}"}} {running}')
    lines.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {h.count}')
    suffix = f"{{{labels}}}" if labels else ""
    lines.append(f"{name}_sum{suffix} {h.total}")
    lines.append(f"{name}_count{suffix} {h.count}")
    return lines


def render(stats: RequestStats, engine: EngineMetrics | None) -> str:
    """The ``/metrics`` body."""
    lines = [
        "# TYPE tgi_request_count counter",
        f"tgi_request_count {stats.count}",
        "# TYPE tgi_request_success counter",
        f"tgi_request_success {stats.success}",
        "# TYPE tgi_request_failure counter",
    ]
    for err, n in sorted(stats.failure.items()):
        lines.append(f'tgi_request_failure{{err="{err}"}} {n}')
    lines += _histogram("tgi_request_duration", "End-to-end request duration (s)", stats.duration)
    if engine is not None:
        lines += [
            "# TYPE tgi_queue_size gauge",
            f"tgi_queue_size {engine.queue_size}",
            "# TYPE tgi_batch_current_size gauge",
            f"tgi_batch_current_size {engine.batch_size}",
            "# TYPE tgi_batch_inference_count counter",
            f'tgi_batch_inference_count{{method="prefill"}} {engine.prefill_steps}',
            f'tgi_batch_inference_count{{method="decode"}} {engine.decode_steps}',
            "# TYPE streamhost_generated_tokens counter",
            f"streamhost_generated_tokens {engine.generated_tokens}",
            "# TYPE streamhost_finish_reason counter",
        ]
        for reason, n in sorted(engine.finish_reasons.items()):
            lines.append(f'streamhost_finish_reason{{reason="{reason}"}} {n}')
        lines += _histogram(
            "tgi_batch_forward_duration",
            "Prefill forward duration (s)",
            engine.prefill_duration,
            'method="prefill"',
        )
        lines += _histogram(
            "tgi_batch_forward_duration",
            "Decode step duration (s)",
            engine.decode_duration,
            'method="decode"',
        )[2:]
        lines += _histogram(
            "streamhost_time_to_first_token", "Time to first token (s)", engine.ttft
        )
    return "\n".join(lines) + "\n"
