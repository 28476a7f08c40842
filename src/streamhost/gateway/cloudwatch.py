"""CloudWatch's read API for the endpoints' metrics: boto3's `cloudwatch` client pointed at
the gateway (`AWS_ENDPOINT_URL_CLOUDWATCH`).

`GetMetricStatistics`, `GetMetricData` (metric queries; no metric math) and `ListMetrics`
for namespace `AWS/SageMaker`, over CloudWatch's JSON 1.0 protocol (`POST /`,
`X-Amz-Target: GraniteServiceVersion20100801.<Operation>`, SigV4 service `monitoring`),
which botocore sends from 1.42.7 on; that is the project's floor for this reason (older
botocore sends the query protocol, which is not served). Input is checked against
botocore's `cloudwatch` model as the control plane's is; errors carry the
`x-amzn-query-error` header botocore reads CloudWatch's error codes from.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import botocore.session
from botocore.model import ServiceModel

from .errors import AwsError
from .metrics import METRICS, NAMESPACE, Metrics, Stat
from .validation import validate_input

__all__ = ["CONTENT_TYPE", "SERVICE", "TARGET_PREFIX", "CloudWatch"]

TARGET_PREFIX = "GraniteServiceVersion20100801."
CONTENT_TYPE = "application/x-amz-json-1.0"
SERVICE = "monitoring"  # the SigV4 scope's service
_MAX_DATAPOINTS = 1440  # GetMetricStatistics' limit per call
_STATISTICS = ("SampleCount", "Average", "Sum", "Minimum", "Maximum")
_DIMENSIONS = ("EndpointName", "VariantName")


@functools.lru_cache(maxsize=1)
def cloudwatch_model() -> ServiceModel:
    """botocore's `cloudwatch` service model (loaded once)."""
    return botocore.session.get_session().get_service_model("cloudwatch")


def invalid(message: str, code: str = "InvalidParameterValue") -> AwsError:
    return AwsError(code, message)


class CloudWatch:
    """The operations, over the gateway's `Metrics`."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    async def handle(self, operation: str, params: Any) -> dict[str, Any]:
        """One operation's result; `AwsError` for bad input."""
        params = validate_input(operation, params, cloudwatch_model())
        if operation == "GetMetricStatistics":
            return await self._statistics(params)
        if operation == "GetMetricData":
            return await self._data(params)
        if operation == "ListMetrics":
            return self._list(params)
        raise AwsError(
            "UnknownOperationException",
            f"streamhost serves CloudWatch's GetMetricStatistics, GetMetricData and "
            f"ListMetrics, not {operation}.",
        )

    async def _statistics(self, params: dict[str, Any]) -> dict[str, Any]:
        statistics = params.get("Statistics") or []
        if params.get("ExtendedStatistics"):
            raise invalid(
                "streamhost keeps no percentiles: ask for Statistics (SampleCount, Average, "
                "Sum, Minimum, Maximum), not ExtendedStatistics."
            )
        if not statistics:
            raise invalid(
                "Either Statistics or ExtendedStatistics must be specified.", "MissingParameter"
            )
        start, end, period = _window(
            params["StartTime"], params["EndTime"], params["Period"], self.metrics.resolution
        )
        if (end - start) / period > _MAX_DATAPOINTS:
            raise invalid(
                f"You have requested up to {math.ceil((end - start) / period)} datapoints, "
                f"which exceeds the limit of {_MAX_DATAPOINTS}. You may reduce the datapoints "
                "requested by increasing Period, or decreasing the time range.",
                "InvalidParameterCombination",
            )
        metric = params["MetricName"]
        datapoints = []
        for at, stat in await self._read(
            params["Namespace"], metric, params.get("Dimensions"), start, end, period
        ):
            point: dict[str, Any] = {"Timestamp": at, "Unit": METRICS[metric]}
            point.update({name: stat.statistic(name) for name in statistics})
            datapoints.append(point)
        return {"Label": metric, "Datapoints": datapoints}

    async def _data(self, params: dict[str, Any]) -> dict[str, Any]:
        queries = params["MetricDataQueries"]
        ids = [q["Id"] for q in queries]
        if len(set(ids)) != len(ids):
            raise invalid("The values for parameter Id in MetricDataQueries must be unique.")
        results = []
        for query in queries:
            stat_query = query.get("MetricStat")
            if stat_query is None or query.get("Expression"):
                raise invalid(
                    f"Query {query['Id']}: streamhost evaluates MetricStat queries, not "
                    "metric math (Expression)."
                )
            stat = stat_query["Stat"]
            if stat not in _STATISTICS:
                raise invalid(
                    f"Query {query['Id']}: the statistic {stat!r} is not kept; use one of "
                    f"{', '.join(_STATISTICS)}."
                )
            if not query.get("ReturnData", True):
                continue
            metric = stat_query["Metric"]
            name = metric.get("MetricName", "")
            start, end, period = _window(
                params["StartTime"],
                params["EndTime"],
                stat_query["Period"],
                self.metrics.resolution,
            )
            points = await self._read(
                metric.get("Namespace", ""), name, metric.get("Dimensions"), start, end, period
            )
            if params.get("ScanBy", "TimestampDescending") == "TimestampDescending":
                points.reverse()
            limit = params.get("MaxDatapoints")
            if limit is not None:
                points = points[:limit]
            results.append(
                {
                    "Id": query["Id"],
                    "Label": query.get("Label") or name,
                    "Timestamps": [at for at, _ in points],
                    "Values": [s.statistic(stat) for _, s in points],
                    "StatusCode": "Complete",
                }
            )
        return {"MetricDataResults": results, "Messages": []}

    def _list(self, params: dict[str, Any]) -> dict[str, Any]:
        namespace = params.get("Namespace")
        if namespace not in (None, NAMESPACE):
            return {"Metrics": []}
        wanted = params.get("MetricName")
        filters = {f["Name"]: f.get("Value") for f in params.get("Dimensions") or []}
        found = []
        for endpoint, variant, metric in sorted(set(self.metrics.series())):
            values = {"EndpointName": endpoint, "VariantName": variant}
            if wanted not in (None, metric):
                continue
            if any(
                name not in values or (value is not None and values[name] != value)
                for name, value in filters.items()
            ):
                continue
            found.append(
                {
                    "Namespace": NAMESPACE,
                    "MetricName": metric,
                    "Dimensions": [{"Name": n, "Value": values[n]} for n in _DIMENSIONS],
                }
            )
        return {"Metrics": found}

    async def _read(
        self,
        namespace: str,
        metric: str,
        dimensions: list[dict[str, str]] | None,
        start: float,
        end: float,
        period: int,
    ) -> list[tuple[int, Stat]]:
        """A metric's periods; none for what streamhost does not measure (as CloudWatch
        answers for a metric nobody published)."""
        values = {d["Name"]: d["Value"] for d in dimensions or []}
        if namespace != NAMESPACE or metric not in METRICS or set(values) != set(_DIMENSIONS):
            return []
        return await self.metrics.statistics(
            values["EndpointName"], values["VariantName"], metric, start, end, period
        )


def _window(start: float, end: float, period: int, finest: int) -> tuple[float, float, int]:
    """CloudWatch's checks of a time range and a period."""
    if (
        period <= 0
        or (period >= 60 and period % 60)
        or (period < 60 and period not in (1, 5, 10, 30))
    ):
        raise invalid(
            f"The parameter Period must be 1, 5, 10, 30 or a multiple of 60, got {period}."
        )
    if end <= start:
        raise invalid("The parameter StartTime must be less than the parameter EndTime.")
    # Periods finer than the buckets are the buckets (10 s unless the gateway says).
    return start, end, max(period, finest)


def error_document(error: AwsError) -> tuple[dict[str, Any], tuple[tuple[bytes, bytes], ...]]:
    """An error as CloudWatch's JSON protocol answers it: its body, and its query-protocol
    code in the header botocore reads it from."""
    code = "InvalidParameterValue" if error.code == "ValidationException" else error.code
    fault = "Receiver" if error.status >= 500 else "Sender"
    return {"__type": code, "message": error.message}, (
        (b"x-amzn-query-error", f"{code};{fault}".encode()),
    )
