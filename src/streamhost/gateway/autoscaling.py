"""Application Auto Scaling for endpoint variants: its API, and the scaler it drives.

The API is boto3's `application-autoscaling` client pointed at the gateway
(`AWS_ENDPOINT_URL_APPLICATION_AUTO_SCALING`): JSON 1.1, `X-Amz-Target:
AnyScaleFrontendService.<Operation>`, SigV4 service `application-autoscaling`, input checked
against botocore's model. It scales `sagemaker:variant:DesiredInstanceCount` (resource ids
`endpoint/<name>/variant/<variant>`) with `TargetTrackingScaling` policies on
`SageMakerVariantInvocationsPerInstance`, `SageMakerVariantConcurrentRequestsPerModelHighResolution`
or a customized metric over the gateway's `AWS/SageMaker` metrics. Targets, policies and
the last six weeks of activities are kept in the store, so they survive a restart.

The scaler evaluates each target every metric period, as the alarms Application Auto
Scaling creates for a target tracking policy do:

- the metric: `InvocationsPerInstance` (`Sum` per 60 s period, a period without requests
  counting 0), `ConcurrentRequestsPerModel` (`Average` per 10 s period), or the customized
  metric's statistic per 60 s (10 s for `ConcurrentRequestsPerModel`);
- scale out when the last 3 periods are all above the target value (AlarmHigh), to
  ceil(capacity × metric / target), at least one more;
- scale in when every period of the last 15 minutes is below 90 % of the target value
  (AlarmLow), to ceil(capacity × metric / target), unless `DisableScaleIn`; with several
  policies, out when any says out, in only when all say in;
- cooldowns `ScaleOutCooldown` / `ScaleInCooldown`, 300 s by default for SageMaker
  variants: no scale-out within the first after a scale-out, no scale-in within the second
  after any scaling;
- always within the target's [MinCapacity, MaxCapacity] (a capacity found outside is
  brought in at once).

A change is an `UpdateEndpointWeightsAndCapacities` through the control plane, the path a
client's call takes: added instances take traffic once healthy, removed ones are drained.
`--autoscaling-time-scale F` multiplies the periods, the 15 minutes and the cooldowns by F
(periods at least 1 s), so that tests and demos scale in seconds.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import botocore.session
from botocore.model import ServiceModel

from .errors import AwsError
from .lifecycle import EndpointStatus
from .metrics import METRICS, Metrics
from .metrics import NAMESPACE as METRICS_NAMESPACE
from .validation import validate_input

if TYPE_CHECKING:
    from .control import ControlPlane
    from .store import Store

__all__ = ["CONTENT_TYPE", "SERVICE", "TARGET_PREFIX", "AutoScaling"]

log = logging.getLogger(__name__)

TARGET_PREFIX = "AnyScaleFrontendService."
CONTENT_TYPE = "application/x-amz-json-1.1"
SERVICE = "application-autoscaling"  # the SigV4 scope's service
NAMESPACE = "sagemaker"
DIMENSION = "sagemaker:variant:DesiredInstanceCount"
DEFAULT_COOLDOWN = 300.0  # seconds, for SageMaker variants
OUT_PERIODS = 3  # AlarmHigh: this many periods above the target
IN_WINDOW = 15 * 60.0  # AlarmLow: every period of this window below IN_RATIO × target
IN_RATIO = 0.9
ACTIVITY_SPAN = 42 * 86400.0  # activities are kept six weeks
# Predefined metric type → (metric, statistic, period in seconds).
PREDEFINED = {
    "SageMakerVariantInvocationsPerInstance": ("InvocationsPerInstance", "Sum", 60),
    "SageMakerVariantConcurrentRequestsPerModelHighResolution": (
        "ConcurrentRequestsPerModel",
        "Average",
        10,
    ),
}
_COUNTS = {"Invocations", "InvocationsPerInstance"}  # a period without requests is 0
_ROLE = (
    "arn:aws:iam::{account}:role/aws-service-role/sagemaker.application-autoscaling."
    "amazonaws.com/AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint"
)


@functools.lru_cache(maxsize=1)
def autoscaling_model() -> ServiceModel:
    """botocore's `application-autoscaling` service model (loaded once)."""
    return botocore.session.get_session().get_service_model("application-autoscaling")


def _invalid(message: str) -> AwsError:
    return AwsError("ValidationException", message)


def _not_found(target: dict[str, Any]) -> AwsError:
    return AwsError(
        "ObjectNotFoundException",
        f"No scalable target registered for service namespace: {NAMESPACE}, resource ID: "
        f"{target['ResourceId']}, scalable dimension: {DIMENSION}",
    )


def _public(document: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in document.items() if not k.startswith("_")}


class AutoScaling:
    """The API's state and the scaler (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        control: ControlPlane,
        metrics: Metrics,
        region: str,
        account: str,
        time_scale: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.control = control
        self.metrics = metrics
        self.region = region
        self.account = account
        self.time_scale = time_scale
        self.clock = clock
        self.targets: dict[str, dict[str, Any]] = {}  # by ResourceId
        self.policies: dict[tuple[str, str], dict[str, Any]] = {}  # by (ResourceId, name)
        self.activities: list[dict[str, Any]] = []  # oldest first

    async def load(self) -> None:
        """Read the targets, policies and recent activities from the store."""
        targets, policies, activities = await asyncio.to_thread(self._read)
        self.targets = {t["ResourceId"]: t for t in targets}
        self.policies = {(p["ResourceId"], p["PolicyName"]): p for p in policies}
        self.activities = activities

    def _read(self) -> tuple[list, list, list]:
        since = self.clock() - ACTIVITY_SPAN
        return (
            self.store.documents("target"),
            self.store.documents("policy"),
            self.store.documents("activity", since),
        )

    # -- the API --------------------------------------------------------------------------

    async def handle(self, operation: str, params: Any) -> dict[str, Any]:
        """One operation's result; `AwsError` for bad input."""
        request = validate_input(operation, params, autoscaling_model())
        handler = _OPERATIONS.get(operation)
        if handler is None:
            raise AwsError(
                "UnknownOperationException",
                f"streamhost serves Application Auto Scaling's {', '.join(_OPERATIONS)}; "
                f"not {operation}.",
            )
        return await handler(self, request)

    def _resource(self, request: dict[str, Any]) -> tuple[str, str, str]:
        """(ResourceId, endpoint, variant) of a request about a SageMaker variant."""
        if request["ServiceNamespace"] != NAMESPACE or request["ScalableDimension"] != DIMENSION:
            raise _invalid(
                f"streamhost scales SageMaker endpoint variants only: ServiceNamespace "
                f"{NAMESPACE!r} and ScalableDimension {DIMENSION!r}."
            )
        resource = request["ResourceId"]
        parts = resource.split("/")
        if len(parts) != 4 or parts[0] != "endpoint" or parts[2] != "variant":
            raise _invalid(
                f"Unsupported resource ID {resource!r}: a SageMaker variant's is "
                "endpoint/<EndpointName>/variant/<VariantName>."
            )
        return resource, parts[1], parts[3]

    async def register_scalable_target(self, request: dict[str, Any]) -> dict[str, Any]:
        resource, endpoint, variant = self._resource(request)
        old = self.targets.get(resource)
        low = request.get("MinCapacity", old["MinCapacity"] if old else None)
        high = request.get("MaxCapacity", old["MaxCapacity"] if old else None)
        if low is None or high is None:
            raise _invalid(
                "MinCapacity and MaxCapacity are required to register a new scalable target."
            )
        if low < 1:
            raise _invalid(
                "MinCapacity must be at least 1: a variant with no instance needs inference "
                "components, which streamhost does not run."
            )
        if high < low:
            raise _invalid(f"MaxCapacity {high} must not be less than MinCapacity {low}.")
        record = await asyncio.to_thread(self.store.get_endpoint, endpoint)
        snapshot = None if record is None else (record.deployment or record.pending)
        names = [
            v["VariantName"]
            for v in (snapshot or {}).get("config", {}).get("ProductionVariants", [])
        ]
        if variant not in names:
            raise _invalid(
                f"The target resource {resource} does not exist: endpoint {endpoint} has no "
                f"variant {variant}."
            )
        target = (
            dict(old)
            if old
            else {
                "ServiceNamespace": NAMESPACE,
                "ResourceId": resource,
                "ScalableDimension": DIMENSION,
                "RoleARN": request.get("RoleARN") or _ROLE.format(account=self.account),
                "CreationTime": self.clock(),
                "ScalableTargetARN": f"arn:aws:application-autoscaling:{self.region}:"
                f"{self.account}:scalable-target/{uuid.uuid4().hex}",
                "SuspendedState": {
                    "DynamicScalingInSuspended": False,
                    "DynamicScalingOutSuspended": False,
                    "ScheduledScalingSuspended": False,
                },
            }
        )
        target["MinCapacity"], target["MaxCapacity"] = low, high
        if "SuspendedState" in request:
            target["SuspendedState"] = {**target["SuspendedState"], **request["SuspendedState"]}
        await asyncio.to_thread(self.store.put_document, "target", resource, target, self.clock())
        self.targets[resource] = target
        return {"ScalableTargetARN": target["ScalableTargetARN"]}

    async def deregister_scalable_target(self, request: dict[str, Any]) -> dict[str, Any]:
        resource, _, _ = self._resource(request)
        if resource not in self.targets:
            raise _not_found({"ResourceId": resource})
        names = [key for key in self.policies if key[0] == resource]
        await asyncio.to_thread(self.store.delete_documents, "target", [resource])
        await asyncio.to_thread(
            self.store.delete_documents, "policy", [_policy_key(*key) for key in names]
        )
        del self.targets[resource]
        for key in names:
            del self.policies[key]
        return {}

    async def describe_scalable_targets(self, request: dict[str, Any]) -> dict[str, Any]:
        wanted = set(request.get("ResourceIds") or [])
        found = [
            _public(t)
            for t in self.targets.values()
            if request["ServiceNamespace"] == NAMESPACE
            and request.get("ScalableDimension", DIMENSION) == DIMENSION
            and (not wanted or t["ResourceId"] in wanted)
        ]
        return _page(found, request, "ScalableTargets")

    async def put_scaling_policy(self, request: dict[str, Any]) -> dict[str, Any]:
        resource, endpoint, variant = self._resource(request)
        if resource not in self.targets:
            raise _not_found({"ResourceId": resource})
        if request.get("PolicyType", "StepScaling") != "TargetTrackingScaling":
            raise _invalid(
                "streamhost runs TargetTrackingScaling policies; StepScaling and "
                "PredictiveScaling are not served."
            )
        config = request.get("TargetTrackingScalingPolicyConfiguration")
        if config is None:
            raise _invalid(
                "TargetTrackingScalingPolicyConfiguration is required for a "
                "TargetTrackingScaling policy."
            )
        _metric_of(config, endpoint, variant)  # refused here if streamhost cannot track it
        if config["TargetValue"] <= 0:
            raise _invalid(f"TargetValue must be positive, got {config['TargetValue']:g}.")
        name = request["PolicyName"]
        old = self.policies.get((resource, name))
        alarm = f"TargetTracking-{resource}-Alarm{{}}-{uuid.uuid4()}"
        policy = {
            "PolicyARN": old["PolicyARN"]
            if old
            else (
                f"arn:aws:autoscaling:{self.region}:{self.account}:scalingPolicy:"
                f"{uuid.uuid4()}:resource/{NAMESPACE}/{resource}:policyName/{name}"
            ),
            "PolicyName": name,
            "ServiceNamespace": NAMESPACE,
            "ResourceId": resource,
            "ScalableDimension": DIMENSION,
            "PolicyType": "TargetTrackingScaling",
            "TargetTrackingScalingPolicyConfiguration": config,
            "Alarms": old["Alarms"]
            if old
            else [
                {
                    "AlarmName": alarm.format(kind),
                    "AlarmARN": f"arn:aws:cloudwatch:{self.region}:{self.account}:alarm:"
                    + alarm.format(kind),
                }
                for kind in ("High", "Low")
            ],
            "CreationTime": old["CreationTime"] if old else self.clock(),
        }
        await asyncio.to_thread(
            self.store.put_document, "policy", _policy_key(resource, name), policy, self.clock()
        )
        self.policies[(resource, name)] = policy
        return {"PolicyARN": policy["PolicyARN"], "Alarms": policy["Alarms"]}

    async def delete_scaling_policy(self, request: dict[str, Any]) -> dict[str, Any]:
        resource, _, _ = self._resource(request)
        key = (resource, request["PolicyName"])
        if key not in self.policies:
            raise AwsError(
                "ObjectNotFoundException",
                f"No scaling policy found for service namespace: {NAMESPACE}, resource ID: "
                f"{resource}, scalable dimension: {DIMENSION}, policy name: {key[1]}",
            )
        await asyncio.to_thread(self.store.delete_documents, "policy", [_policy_key(*key)])
        del self.policies[key]
        return {}

    async def describe_scaling_policies(self, request: dict[str, Any]) -> dict[str, Any]:
        names = set(request.get("PolicyNames") or [])
        resource = request.get("ResourceId")
        found = [
            _public(p)
            for (r, name), p in self.policies.items()
            if request["ServiceNamespace"] == NAMESPACE
            and (resource is None or r == resource)
            and (not names or name in names)
        ]
        return _page(found, request, "ScalingPolicies")

    async def describe_scaling_activities(self, request: dict[str, Any]) -> dict[str, Any]:
        resource = request.get("ResourceId")
        found = [
            _public(a)
            for a in reversed(self.activities)
            if request["ServiceNamespace"] == NAMESPACE
            and (resource is None or a["ResourceId"] == resource)
        ]
        return _page(found, request, "ScalingActivities")

    # -- the scaler -----------------------------------------------------------------------

    def period(self, seconds: int) -> int:
        """A metric period as this gateway runs it (scaled; at least the metrics' buckets)."""
        return max(self.metrics.resolution, round(seconds * self.time_scale))

    async def run(self) -> None:
        """Evaluate every target once per shortest period, for as long as the gateway runs."""
        while True:
            await asyncio.sleep(self.period(10))
            for resource in list(self.targets):
                try:
                    await self.evaluate(resource)
                except Exception:
                    log.exception("autoscaling %s failed", resource)

    async def evaluate(self, resource: str) -> None:
        """Bring one target's variant to what its policies ask, within its bounds."""
        target = self.targets.get(resource)
        if target is None:
            return
        _, endpoint, _, variant = resource.split("/")
        record = await asyncio.to_thread(self.store.get_endpoint, endpoint)
        if record is None or record.deployment is None:
            return
        await self._settle(resource, variant, record)
        if record.status != EndpointStatus.IN_SERVICE:
            return  # a change (ours or a client's) is under way
        spec = next(
            (
                v
                for v in record.deployment["config"]["ProductionVariants"]
                if v["VariantName"] == variant
            ),
            None,
        )
        if spec is None:
            return
        capacity = int(spec.get("DesiredInstanceCount", spec.get("InitialInstanceCount", 1)))
        low, high = int(target["MinCapacity"]), int(target["MaxCapacity"])
        if not low <= capacity <= high:
            bound = low if capacity < low else high
            cause = f"{'minimum' if capacity < low else 'maximum'} capacity was set to {bound}"
            await self._scale(resource, endpoint, variant, bound, cause, "bounds")
            return
        suspended = target.get("SuspendedState") or {}
        outs, ins = [], []
        policies = [p for (r, _), p in self.policies.items() if r == resource]
        for policy in policies:
            decision = await self._decide(policy, endpoint, variant, capacity)
            if decision is None:
                continue
            direction, proposal = decision
            (outs if direction == "out" else ins).append((proposal, policy))
        if outs and not suspended.get("DynamicScalingOutSuspended"):
            await self._act(resource, variant, capacity, outs, "out", lambda n: min(n, high))
        elif ins and len(ins) == len(policies) and not suspended.get("DynamicScalingInSuspended"):
            await self._act(resource, variant, capacity, ins, "in", lambda n: max(n, low))

    async def _act(
        self,
        resource: str,
        variant: str,
        capacity: int,
        decided: list[tuple[int, dict[str, Any]]],
        direction: str,
        bound: Callable[[int], int],
    ) -> None:
        """Scale to the largest capacity the policies that fired ask for (within the bound),
        unless a cooldown runs: a scale-out's after a scale-out, a scale-in's after any."""
        out = direction == "out"
        key, after = ("ScaleOutCooldown", ("out",)) if out else ("ScaleInCooldown", ("out", "in"))
        if self.clock() - self._last(resource, after) < self._cooldown(decided, key):
            return
        proposal, policy = max(decided, key=lambda item: item[0])
        desired = bound(proposal)
        if desired == capacity:
            return  # at its bound already
        alarm = policy["Alarms"][0 if out else 1]["AlarmName"]
        cause = f"monitor alarm {alarm} in state ALARM triggered policy {policy['PolicyName']}"
        await self._scale(resource, resource.split("/")[1], variant, desired, cause, direction)

    async def _decide(
        self, policy: dict[str, Any], endpoint: str, variant: str, capacity: int
    ) -> tuple[str, int] | None:
        """("out" | "in", the capacity asked for) when the policy's alarm fires, else None."""
        config = policy["TargetTrackingScalingPolicyConfiguration"]
        metric, statistic, seconds = _metric_of(config, endpoint, variant)
        period = self.period(seconds)
        goal = float(config["TargetValue"])
        now = self.clock()
        last = int(now // period * period)  # the period under way is not complete
        count = max(OUT_PERIODS, math.ceil(IN_WINDOW * self.time_scale / period))
        start = last - count * period
        stats = dict(await self.metrics.statistics(endpoint, variant, metric, start, last, period))
        values: list[float | None] = []
        for at in range(start, last, period):
            stat = stats.get(at)
            if stat is not None:
                values.append(stat.statistic(statistic))
            else:
                values.append(0.0 if metric in _COUNTS else None)
        recent = values[-OUT_PERIODS:]
        if all(v is not None and v > goal for v in recent):
            latest = float(recent[-1] or 0.0)
            return "out", max(capacity + 1, math.ceil(capacity * latest / goal))
        if config.get("DisableScaleIn") or capacity <= 1:
            return None
        present = [v for v in values if v is not None]  # a missed sample is not a breach
        if len(present) * 2 >= len(values) and all(v < IN_RATIO * goal for v in present):
            latest = present[-1]
            proposal = max(1, math.ceil(capacity * latest / goal))
            if proposal < capacity:
                return "in", proposal
        return None

    def _cooldown(self, decided: list[tuple[int, dict[str, Any]]], key: str) -> float:
        config = decided[0][1]["TargetTrackingScalingPolicyConfiguration"]
        return float(config.get(key, DEFAULT_COOLDOWN)) * self.time_scale

    def _last(self, resource: str, directions: tuple[str, ...]) -> float:
        """When the target's last scaling in one of these directions ended (or began)."""
        for activity in reversed(self.activities):
            if activity["ResourceId"] == resource and activity.get("_direction") in directions:
                return float(activity.get("EndTime") or activity["StartTime"])
        return 0.0

    async def _scale(
        self, resource: str, endpoint: str, variant: str, desired: int, cause: str, direction: str
    ) -> None:
        """Set the variant's DesiredInstanceCount as a client's call would; one activity."""
        now = self.clock()
        activity: dict[str, Any] = {
            "ActivityId": str(uuid.uuid4()),
            "ServiceNamespace": NAMESPACE,
            "ResourceId": resource,
            "ScalableDimension": DIMENSION,
            "Description": f"Setting desired instance count to {desired}.",
            "Cause": cause,
            "StartTime": now,
            "StatusCode": "InProgress",
            "_direction": direction,
            "_desired": desired,
        }
        try:
            await self.control.handle(
                "UpdateEndpointWeightsAndCapacities",
                {
                    "EndpointName": endpoint,
                    "DesiredWeightsAndCapacities": [
                        {"VariantName": variant, "DesiredInstanceCount": desired}
                    ],
                },
            )
            log.info("autoscaling %s: %s (%s)", resource, activity["Description"], cause)
        except AwsError as error:
            activity.update(
                StatusCode="Failed",
                EndTime=self.clock(),
                StatusMessage=f"Failed to set desired instance count to {desired}. {error.message}",
            )
        await self._record(activity)

    async def _settle(self, resource: str, variant: str, record: Any) -> None:
        """End the target's activity under way once its endpoint is InService again."""
        if record.status != EndpointStatus.IN_SERVICE:
            return
        for activity in self.activities:
            if activity["ResourceId"] != resource or activity["StatusCode"] != "InProgress":
                continue
            desired = activity["_desired"]
            variants = record.deployment["config"]["ProductionVariants"]
            count = next(
                (
                    v.get("DesiredInstanceCount", v.get("InitialInstanceCount"))
                    for v in variants
                    if v["VariantName"] == variant
                ),
                None,
            )
            if count == desired:
                activity.update(
                    StatusCode="Successful",
                    EndTime=self.clock(),
                    StatusMessage=f"Successfully set desired instance count to {desired}. "
                    "Change successfully fulfilled by sagemaker.",
                )
            else:
                activity.update(
                    StatusCode="Failed",
                    EndTime=self.clock(),
                    StatusMessage=f"Failed to set desired instance count to {desired}. "
                    f"{record.failure_reason or 'The endpoint kept its capacity.'}",
                )
            await self._record(activity)

    async def _record(self, activity: dict[str, Any]) -> None:
        if not any(a is activity for a in self.activities):
            self.activities.append(activity)
        await asyncio.to_thread(
            self.store.put_document,
            "activity",
            activity["ActivityId"],
            activity,
            activity["StartTime"],
        )


def _metric_of(config: dict[str, Any], endpoint: str, variant: str) -> tuple[str, str, int]:
    """(metric, statistic, period) a policy tracks; `ValidationException` if streamhost
    cannot track it."""
    predefined = config.get("PredefinedMetricSpecification")
    if predefined is not None:
        kind = predefined["PredefinedMetricType"]
        if kind not in PREDEFINED:
            raise _invalid(
                f"Predefined metric {kind} is not for SageMaker variants; use one of "
                f"{', '.join(PREDEFINED)}."
            )
        return PREDEFINED[kind]
    custom = config.get("CustomizedMetricSpecification")
    if custom is None:
        raise _invalid(
            "A target tracking policy needs PredefinedMetricSpecification or "
            "CustomizedMetricSpecification."
        )
    name = custom.get("MetricName")
    if custom.get("Metrics") or name not in METRICS or custom.get("Namespace") != METRICS_NAMESPACE:
        raise _invalid(
            "streamhost tracks customized metrics of namespace AWS/SageMaker by MetricName "
            f"({', '.join(METRICS)}), not metric math."
        )
    dimensions = {d["Name"]: d["Value"] for d in custom.get("Dimensions") or []}
    if dimensions != {"EndpointName": endpoint, "VariantName": variant}:
        raise _invalid(
            "A customized metric's Dimensions must be EndpointName and VariantName of the "
            "scalable target's variant."
        )
    period = 10 if name == "ConcurrentRequestsPerModel" else 60
    return name, custom.get("Statistic", "Average"), period


def _policy_key(resource: str, name: str) -> str:
    return f"{resource}#{name}"


def _page(items: list[dict[str, Any]], request: dict[str, Any], key: str) -> dict[str, Any]:
    token = request.get("NextToken") or "0"
    if not token.isdigit():
        raise AwsError("InvalidNextTokenException", "The NextToken is not valid.")
    start = int(token)
    size = request.get("MaxResults") or 50
    result: dict[str, Any] = {key: items[start : start + size]}
    if start + size < len(items):
        result["NextToken"] = str(start + size)
    return result


_OPERATIONS = {
    "RegisterScalableTarget": AutoScaling.register_scalable_target,
    "DeregisterScalableTarget": AutoScaling.deregister_scalable_target,
    "DescribeScalableTargets": AutoScaling.describe_scalable_targets,
    "PutScalingPolicy": AutoScaling.put_scaling_policy,
    "DeleteScalingPolicy": AutoScaling.delete_scaling_policy,
    "DescribeScalingPolicies": AutoScaling.describe_scaling_policies,
    "DescribeScalingActivities": AutoScaling.describe_scaling_activities,
}
