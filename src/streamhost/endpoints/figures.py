"""An endpoint's live figures, read the way a SageMaker user reads them: CloudWatch's
`GetMetricData` for the `AWS/SageMaker` metrics and Application Auto Scaling's
`DescribeScalingActivities`, both from the gateway. `streamhost endpoints --watch` prints
them; the chat UI's endpoint view charts them."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

__all__ = ["QUERIES", "VariantFigures", "scaling_activities", "variant_figures"]

# (metric, statistic) read for each variant.
QUERIES = (
    ("Invocations", "Sum"),
    ("InvocationModelErrors", "Sum"),
    ("InstanceCount", "Maximum"),
    ("ConcurrentRequestsPerModel", "Average"),
    ("TimeToFirstByte", "Sum"),
    ("TimeToFirstByte", "SampleCount"),
    ("PayloadParts", "Sum"),
)


@dataclass
class VariantFigures:
    """One variant's datapoints per (metric, statistic), oldest first."""

    endpoint: str
    variant: str
    series: dict[tuple[str, str], list[tuple[dt.datetime, float]]] = field(default_factory=dict)

    def total(self, metric: str, statistic: str = "Sum") -> float:
        return sum(value for _, value in self.series.get((metric, statistic), []))

    def latest(self, metric: str, statistic: str) -> float | None:
        points = self.series.get((metric, statistic), [])
        return points[-1][1] if points else None

    @property
    def instances(self) -> int:
        return int(self.latest("InstanceCount", "Maximum") or 0)

    @property
    def in_flight(self) -> float:
        """Requests in flight on the variant in its latest period (mean per model × models)."""
        return (self.latest("ConcurrentRequestsPerModel", "Average") or 0.0) * self.instances

    @property
    def ttfb_ms(self) -> float | None:
        """Mean time to first byte over the window, in milliseconds."""
        count = self.total("TimeToFirstByte", "SampleCount")
        return self.total("TimeToFirstByte") / count / 1000 if count else None

    def per_period(self, metric: str, statistic: str) -> list[tuple[dt.datetime, float]]:
        return self.series.get((metric, statistic), [])

    def ttfb_ms_per_period(self) -> list[tuple[dt.datetime, float]]:
        """Mean time to first byte of each period with requests, in milliseconds."""
        counts = dict(self.per_period("TimeToFirstByte", "SampleCount"))
        return [
            (at, total / counts[at] / 1000)
            for at, total in self.per_period("TimeToFirstByte", "Sum")
            if counts.get(at)
        ]

    def tokens_per_second(self, period: int) -> list[tuple[dt.datetime, float]]:
        """PayloadParts streamed per second in each `period`-second period (one a token
        for token streams)."""
        return [(at, parts / period) for at, parts in self.per_period("PayloadParts", "Sum")]


def variant_figures(
    cloudwatch: Any,
    variants: list[tuple[str, str]],
    seconds: float = 60.0,
    period: int = 10,
) -> list[VariantFigures]:
    """The last `seconds` of each (endpoint, variant), in `period`-second datapoints."""
    end = dt.datetime.now(dt.timezone.utc)
    start = end - dt.timedelta(seconds=seconds)
    figures = [VariantFigures(endpoint, variant) for endpoint, variant in variants]
    queries = []
    for index, (endpoint, variant) in enumerate(variants):
        dimensions = [
            {"Name": "EndpointName", "Value": endpoint},
            {"Name": "VariantName", "Value": variant},
        ]
        for number, (metric, statistic) in enumerate(QUERIES):
            queries.append(
                {
                    "Id": f"v{index}m{number}",
                    "MetricStat": {
                        "Metric": {
                            "Namespace": "AWS/SageMaker",
                            "MetricName": metric,
                            "Dimensions": dimensions,
                        },
                        "Period": period,
                        "Stat": statistic,
                    },
                }
            )
    for first in range(0, len(queries), 500):  # GetMetricData takes 500 queries at most
        answer = cloudwatch.get_metric_data(
            MetricDataQueries=queries[first : first + 500],
            StartTime=start,
            EndTime=end,
            ScanBy="TimestampAscending",
        )
        for result in answer["MetricDataResults"]:
            index, number = result["Id"][1:].split("m")
            figures[int(index)].series[QUERIES[int(number)]] = list(
                zip(result["Timestamps"], result["Values"], strict=True)
            )
    return figures


def scaling_activities(autoscaling: Any, endpoint: str, variant: str) -> list[dict[str, Any]]:
    """The variant's scaling activities, newest first (none when it is not registered)."""
    return autoscaling.describe_scaling_activities(
        ServiceNamespace="sagemaker", ResourceId=f"endpoint/{endpoint}/variant/{variant}"
    )["ScalingActivities"]
