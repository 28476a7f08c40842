"""Application Auto Scaling on the gateway: AWS's own boto3 calls register a variant, put a
target tracking policy on it, and the endpoint grows with its load and shrinks after it."""

from __future__ import annotations

import threading

import pytest
from botocore.exceptions import ClientError

from tests.harness import (
    create_synthetic_endpoint,
    payload_bytes,
    running_gateway,
    tgi_body,
    wait_for,
)

RESOURCE = "endpoint/{}/variant/AllTraffic"
DIMENSION = "sagemaker:variant:DesiredInstanceCount"


def register(aas, endpoint: str, low: int = 1, high: int = 3) -> dict:
    return aas.register_scalable_target(
        ServiceNamespace="sagemaker",
        ResourceId=RESOURCE.format(endpoint),
        ScalableDimension=DIMENSION,
        MinCapacity=low,
        MaxCapacity=high,
    )


def put_policy(aas, endpoint: str, metric: str, target: float, **extra) -> dict:
    return aas.put_scaling_policy(
        PolicyName=f"{endpoint}-policy",
        ServiceNamespace="sagemaker",
        ResourceId=RESOURCE.format(endpoint),
        ScalableDimension=DIMENSION,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": target,
            "PredefinedMetricSpecification": {"PredefinedMetricType": metric},
            **extra,
        },
    )


def code_and_message(raised: pytest.ExceptionInfo) -> tuple[str, str]:
    error = raised.value.response["Error"]
    return error["Code"], error["Message"]


def test_targets_and_policies_are_kept_across_a_restart(tmp_path):
    state = tmp_path / "state"
    with running_gateway(state) as gateway:
        create_synthetic_endpoint(gateway.sm(), "kept", count=1)
        aas = gateway.autoscaling()
        arn = register(aas, "kept", 1, 4)["ScalableTargetARN"]
        assert arn.startswith("arn:aws:application-autoscaling:us-east-1:")
        policy = put_policy(aas, "kept", "SageMakerVariantInvocationsPerInstance", 70.0)
        assert policy["Alarms"][0]["AlarmName"].startswith(
            "TargetTracking-endpoint/kept/variant/AllTraffic-AlarmHigh-"
        )
        # Registering again updates the bounds in place.
        register(aas, "kept", 2, 4)
    with running_gateway(state) as gateway:
        aas = gateway.autoscaling()
        (target,) = aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
        assert (target["MinCapacity"], target["MaxCapacity"]) == (2, 4)
        assert target["ScalableTargetARN"] == arn
        (kept,) = aas.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
        assert kept["PolicyARN"] == policy["PolicyARN"]
        assert kept["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] == 70.0
        aas.delete_scaling_policy(
            PolicyName="kept-policy",
            ServiceNamespace="sagemaker",
            ResourceId=RESOURCE.format("kept"),
            ScalableDimension=DIMENSION,
        )
        aas.deregister_scalable_target(
            ServiceNamespace="sagemaker",
            ResourceId=RESOURCE.format("kept"),
            ScalableDimension=DIMENSION,
        )
        assert aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []


@pytest.mark.parametrize(
    ("call", "code", "message"),
    [
        (
            lambda aas: register(aas, "nobody"),
            "ValidationException",
            "endpoint nobody has no variant",
        ),
        (
            lambda aas: register(aas, "bounded", 0, 2),
            "ValidationException",
            "MinCapacity must be at least 1",
        ),
        (
            lambda aas: register(aas, "bounded", 3, 2),
            "ValidationException",
            "must not be less than MinCapacity",
        ),
        (
            lambda aas: aas.register_scalable_target(
                ServiceNamespace="ecs",
                ResourceId="service/x/y",
                ScalableDimension="ecs:service:DesiredCount",
                MinCapacity=1,
                MaxCapacity=2,
            ),
            "ValidationException",
            "SageMaker endpoint variants only",
        ),
        (
            lambda aas: put_policy(
                aas, "unregistered", "SageMakerVariantInvocationsPerInstance", 5.0
            ),
            "ObjectNotFoundException",
            "No scalable target registered",
        ),
        (
            lambda aas: aas.deregister_scalable_target(
                ServiceNamespace="sagemaker",
                ResourceId=RESOURCE.format("unregistered"),
                ScalableDimension=DIMENSION,
            ),
            "ObjectNotFoundException",
            "No scalable target registered for service namespace: sagemaker",
        ),
        (
            lambda aas: aas.describe_scaling_activities(
                ServiceNamespace="sagemaker", NextToken="garbage"
            ),
            "InvalidNextTokenException",
            "The NextToken is not valid.",
        ),
    ],
)
def test_bad_calls_get_application_auto_scalings_errors(module_gateway, call, code, message):
    with pytest.raises(ClientError) as raised:
        call(module_gateway.autoscaling())
    got_code, got_message = code_and_message(raised)
    assert got_code == code and message in got_message, got_message


def test_a_policy_on_a_metric_of_another_service_is_refused(module_gateway):
    create_synthetic_endpoint(module_gateway.sm(), "picky", count=1)
    aas = module_gateway.autoscaling()
    register(aas, "picky")
    with pytest.raises(ClientError) as raised:
        put_policy(aas, "picky", "ECSServiceAverageCPUUtilization", 50.0)
    assert "is not for SageMaker variants" in code_and_message(raised)[1]


@pytest.mark.waits  # scaling periods: ~16 s
def test_the_endpoint_grows_with_concurrent_streams_and_shrinks_after_them(tmp_path):
    # At 1/120 of AWS's timing: 1 s periods (the metrics' finest), scale-out after 3 s above
    # target, scale-in after 8 s below 90 % of it (15 min / 120, in whole periods), cooldowns
    # of 0.5 s.
    with running_gateway(tmp_path / "state", autoscaling_time_scale=1 / 120) as gateway:
        sm, smr, aas = gateway.sm(), gateway.smr(), gateway.autoscaling()
        create_synthetic_endpoint(sm, "elastic", count=1)
        register(aas, "elastic", 1, 3)
        put_policy(
            aas,
            "elastic",
            "SageMakerVariantConcurrentRequestsPerModelHighResolution",
            1.0,
            ScaleOutCooldown=60,
            ScaleInCooldown=60,
        )
        results: list[int] = []

        def stream() -> None:
            response = smr.invoke_endpoint_with_response_stream(
                EndpointName="elastic", Body=tgi_body("go", 1200), ContentType="application/json"
            )
            results.append(payload_bytes(response).count(b"data:"))

        streams = [threading.Thread(target=stream) for _ in range(4)]
        for thread in streams:
            thread.start()

        def variant() -> dict:
            return sm.describe_endpoint(EndpointName="elastic")["ProductionVariants"][0]

        # 4 streams on 1 model, target 1: out to ceil(1 × 4 / 1) = 4, held to MaxCapacity 3.
        wait_for(lambda: variant()["CurrentInstanceCount"] == 3, timeout=60, what="scale-out to 3")
        assert variant()["DesiredInstanceCount"] == 3
        for thread in streams:
            thread.join()
        assert results == [1200] * 4  # no stream was cut or lost a chunk
        # Idle: below 90 % of the target for 15 periods, in to MinCapacity.
        wait_for(lambda: variant()["CurrentInstanceCount"] == 1, timeout=90, what="scale-in to 1")

        activities = aas.describe_scaling_activities(
            ServiceNamespace="sagemaker", ResourceId=RESOURCE.format("elastic")
        )["ScalingActivities"]
        wait_for(
            lambda: all(
                a["StatusCode"] == "Successful"
                for a in aas.describe_scaling_activities(ServiceNamespace="sagemaker")[
                    "ScalingActivities"
                ]
            ),
            timeout=30,
        )
        activities = aas.describe_scaling_activities(
            ServiceNamespace="sagemaker", ResourceId=RESOURCE.format("elastic")
        )["ScalingActivities"]
        described = [a["Description"] for a in activities]  # newest first
        assert described == [
            "Setting desired instance count to 1.",
            "Setting desired instance count to 3.",
        ]
        assert "AlarmHigh" in activities[-1]["Cause"] and "AlarmLow" in activities[0]["Cause"]
        assert activities[0]["StatusMessage"] == (
            "Successfully set desired instance count to 1. Change successfully fulfilled by sagemaker."
        )
