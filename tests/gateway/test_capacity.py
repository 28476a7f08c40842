"""UpdateEndpointWeightsAndCapacities: the running fleet grows, shrinks and reweighs, with
boto3, while streams run; the desired values are reported, kept and replaced as
SageMaker keeps and replaces them."""

from __future__ import annotations

import threading
import time

import pytest
from botocore.exceptions import ClientError

from tests.harness import (
    GatewayThread,
    assert_no_model_servers,
    create_synthetic_endpoint,
    delete_endpoint,
    error_of,
    model_servers,
    payload_bytes,
    tgi_body,
    wait_in_service,
)


def capacity(sm, name: str, **desired) -> None:
    entry = {"VariantName": desired.pop("variant", "AllTraffic"), **desired}
    sm.update_endpoint_weights_and_capacities(
        EndpointName=name, DesiredWeightsAndCapacities=[entry]
    )


def variant_summary(sm, name: str, variant: str = "AllTraffic") -> dict:
    described = sm.describe_endpoint(EndpointName=name)
    return next(v for v in described["ProductionVariants"] if v["VariantName"] == variant)


def stream_tokens(smr, name: str, tokens: int) -> int:
    resp = smr.invoke_endpoint_with_response_stream(
        EndpointName=name, Body=tgi_body("go", tokens), ContentType="application/json"
    )
    return payload_bytes(resp).count(b"data:")


def test_scale_out_then_in_while_streams_run_loses_no_chunk(gateway):
    sm, smr = gateway.sm(), gateway.smr()
    create_synthetic_endpoint(sm, "elastic", count=1)

    capacity(sm, "elastic", DesiredInstanceCount=3)
    described = sm.describe_endpoint(EndpointName="elastic")
    assert described["EndpointStatus"] == "Updating"
    assert described["ProductionVariants"][0]["DesiredInstanceCount"] == 3
    wait_in_service(sm, "elastic")
    summary = variant_summary(sm, "elastic")
    assert summary["CurrentInstanceCount"] == summary["DesiredInstanceCount"] == 3
    assert len(model_servers()) == 3

    # Six streams spread over three instances; scale to one while they run: the two
    # removed instances take no new request and are stopped once their streams end.
    counts: list[int] = []
    streams = [
        threading.Thread(target=lambda: counts.append(stream_tokens(smr, "elastic", 300)))
        for _ in range(6)
    ]
    for thread in streams:
        thread.start()
    time.sleep(0.3)
    capacity(sm, "elastic", DesiredInstanceCount=1)
    during = [stream_tokens(smr, "elastic", 20) for _ in range(3)]  # new requests meanwhile
    for thread in streams:
        thread.join(60)
    assert counts == [300] * 6 and during == [20] * 3
    wait_in_service(sm, "elastic")
    summary = variant_summary(sm, "elastic")
    assert summary["CurrentInstanceCount"] == summary["DesiredInstanceCount"] == 1
    assert len(model_servers()) == 1
    delete_endpoint(sm, "elastic")


def test_a_zero_weight_takes_a_variant_out_of_the_traffic(gateway):
    sm, smr = gateway.sm(), gateway.smr()
    variants = [
        {
            "VariantName": name,
            "ModelName": "weighted-model",
            "InstanceType": "ml.m5.xlarge",
            "InitialInstanceCount": 1,
            "InitialVariantWeight": 1.0,
        }
        for name in ("Blue", "Green")
    ]
    create_synthetic_endpoint(sm, "weighted", variants=variants)
    capacity(sm, "weighted", variant="Green", DesiredWeight=0.0)
    wait_in_service(sm, "weighted")
    assert variant_summary(sm, "weighted", "Green")["CurrentWeight"] == 0.0
    chosen = {
        smr.invoke_endpoint(EndpointName="weighted", Body=tgi_body(stream=False))[
            "InvokedProductionVariant"
        ]
        for _ in range(12)
    }
    assert chosen == {"Blue"}
    delete_endpoint(sm, "weighted")


def test_bad_requests_are_validation_errors(module_gateway):
    sm = module_gateway.sm()
    create_synthetic_endpoint(sm, "strict", count=1)
    cases = [
        ({"variant": "Nope", "DesiredInstanceCount": 2}, "The variant name(s) [Nope]"),
        ({"DesiredInstanceCount": 0}, "DesiredInstanceCount 0 needs inference components"),
        ({}, "give DesiredWeight, DesiredInstanceCount or both"),
    ]
    for desired, message in cases:
        with pytest.raises(ClientError) as raised:
            capacity(sm, "strict", **desired)
        _, code, text = error_of(raised)
        assert code == "ValidationException" and message in text, text
    capacity(sm, "strict", DesiredInstanceCount=2)
    with pytest.raises(ClientError) as raised:  # while that one starts its instance
        capacity(sm, "strict", DesiredWeight=3.0)
    assert "Cannot update in-progress endpoint" in error_of(raised)[2]
    wait_in_service(sm, "strict")
    delete_endpoint(sm, "strict")


def test_update_endpoint_replaces_the_desired_values(module_gateway):
    sm = module_gateway.sm()
    create_synthetic_endpoint(sm, "replaced", count=1)
    capacity(sm, "replaced", DesiredInstanceCount=2, DesiredWeight=0.5)
    wait_in_service(sm, "replaced")
    assert variant_summary(sm, "replaced")["DesiredInstanceCount"] == 2
    sm.update_endpoint(EndpointName="replaced", EndpointConfigName="replaced-config")
    wait_in_service(sm, "replaced")
    summary = variant_summary(sm, "replaced")
    assert (summary["DesiredInstanceCount"], summary["CurrentInstanceCount"]) == (1, 1)
    assert summary["DesiredWeight"] == 1.0
    delete_endpoint(sm, "replaced")


@pytest.mark.slow
def test_a_restarted_gateway_restores_the_desired_count(tmp_path):
    state = tmp_path / "state"
    first = GatewayThread(state).start()
    try:
        create_synthetic_endpoint(first.sm(), "kept", count=1)
        capacity(first.sm(), "kept", DesiredInstanceCount=2)
        wait_in_service(first.sm(), "kept")
    finally:
        first.stop()
    assert_no_model_servers()

    second = GatewayThread(state).start()
    try:
        wait_in_service(second.sm(), "kept")
        summary = variant_summary(second.sm(), "kept")
        assert summary["CurrentInstanceCount"] == summary["DesiredInstanceCount"] == 2
        delete_endpoint(second.sm(), "kept")
    finally:
        second.stop()
    assert_no_model_servers()
