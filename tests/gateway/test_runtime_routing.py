"""Routing through the gateway: load sharing, variants, sticky sessions, failures."""

from __future__ import annotations

import json
import os
import re
import signal
import urllib.request

import pytest
from botocore.exceptions import ClientError, EventStreamError

from tests.harness import (
    ROLE,
    TGI_IMAGE,
    create_synthetic_endpoint,
    delete_endpoint,
    payload_bytes,
    tgi_body,
    wait_for,
)


def instances(gateway, endpoint: str):
    """The store's records of the endpoint's instances."""
    return gateway.app.store.list_instances(endpoint)


def metric(record, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{record.port}/metrics", timeout=5) as r:
        text = r.read().decode()
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def new_session(smr, endpoint: str) -> str:
    resp = smr.invoke_endpoint(
        EndpointName=endpoint,
        SessionId="NEW_SESSION",
        Body=json.dumps({"requestType": "NEW_SESSION"}),
        ContentType="application/json",
    )
    assert re.fullmatch(
        r"[0-9a-f-]+; Expires=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", resp["NewSessionId"]
    )
    return resp["NewSessionId"].split(";")[0]


def test_two_instances_share_the_load(gateway):
    sm, smr = gateway.sm(), gateway.smr()
    create_synthetic_endpoint(sm, "shared", count=2)
    assert (
        sm.describe_endpoint(EndpointName="shared")["ProductionVariants"][0]["CurrentInstanceCount"]
        == 2
    )
    for _ in range(10):
        resp = smr.invoke_endpoint_with_response_stream(EndpointName="shared", Body=tgi_body())
        assert b'"generated_text":"hello0 1 2 3 4 "' in payload_bytes(resp)
    counts = [metric(r, "tgi_request_count") for r in instances(gateway, "shared")]
    assert sorted(counts) == [5.0, 5.0]
    delete_endpoint(sm, "shared")


def test_a_session_sticks_to_the_instance_that_created_it(gateway):
    sm, smr = gateway.sm(), gateway.smr()
    create_synthetic_endpoint(sm, "sticky", count=2)
    session = new_session(smr, "sticky")
    before = {r.instance_id: metric(r, "tgi_request_count") for r in instances(gateway, "sticky")}
    for _ in range(6):
        # Another instance would answer 400 "session not found" (a 424 ModelError here).
        resp = smr.invoke_endpoint(
            EndpointName="sticky", SessionId=session, Body=tgi_body(stream=False)
        )
        assert resp["Body"].read()
        streamed = smr.invoke_endpoint_with_response_stream(
            EndpointName="sticky", SessionId=session, Body=tgi_body()
        )
        assert payload_bytes(streamed)
    after = {r.instance_id: metric(r, "tgi_request_count") for r in instances(gateway, "sticky")}
    assert sorted(after[i] - before[i] for i in after) == [0.0, 12.0]

    closed = smr.invoke_endpoint(
        EndpointName="sticky", SessionId=session, Body=json.dumps({"requestType": "CLOSE"})
    )
    assert closed["ClosedSessionId"] == session
    assert gateway.app.router.session_count() == 0
    delete_endpoint(sm, "sticky")


def test_killing_an_instance_mid_stream_is_a_model_stream_error_and_it_is_replaced(gateway):
    sm, smr = gateway.sm(), gateway.smr()
    create_synthetic_endpoint(sm, "fragile", count=2, delay_ms=5)
    old_pids = {r.pid for r in instances(gateway, "fragile")}
    resp = smr.invoke_endpoint_with_response_stream(
        EndpointName="fragile", Body=tgi_body(tokens=2000)
    )
    events = iter(resp["Body"])
    for _ in range(3):
        assert "PayloadPart" in next(events)
    busy = [i for v in gateway.app.router.variants("fragile") for i in v.instances if i.outstanding]
    assert len(busy) == 1
    victim = next(r for r in instances(gateway, "fragile") if r.instance_id == busy[0].instance_id)
    os.kill(victim.pid, signal.SIGKILL)
    with pytest.raises(EventStreamError) as raised:
        for _ in events:
            pass
    assert raised.value.response["Error"]["Code"] == "ModelStreamError"
    assert "broken" in raised.value.response["Error"]["Message"]

    # The next request is served by the surviving instance.
    again = smr.invoke_endpoint_with_response_stream(EndpointName="fragile", Body=tgi_body())
    assert b"generated_text" in payload_bytes(again)

    # The dead one is replaced by a new, healthy process; the endpoint never left InService.
    def replaced():
        records = instances(gateway, "fragile")
        pids = {r.pid for r in records if r.state == "InService"}
        return len(pids) == 2 and victim.pid not in pids and pids != old_pids

    wait_for(replaced, what="a replacement instance")
    described = sm.describe_endpoint(EndpointName="fragile")
    assert described["EndpointStatus"] == "InService"
    assert described["ProductionVariants"][0]["CurrentInstanceCount"] == 2
    delete_endpoint(sm, "fragile")


def test_a_session_on_a_dead_instance_is_a_clear_error_not_a_reroute(gateway):
    sm, smr = gateway.sm(), gateway.smr()
    create_synthetic_endpoint(sm, "lost", count=2)
    session = new_session(smr, "lost")
    holder = gateway.app.router._sessions[session].instance
    record = next(r for r in instances(gateway, "lost") if r.instance_id == holder.instance_id)
    os.kill(record.pid, signal.SIGKILL)
    wait_for(lambda: holder.gone, what="the instance to be retired")
    with pytest.raises(ClientError) as raised:
        smr.invoke_endpoint(EndpointName="lost", SessionId=session, Body=tgi_body(stream=False))
    error = raised.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert error["Error"]["Code"] == "ValidationError"
    assert f"Session {session} is no longer available" in error["Error"]["Message"]
    delete_endpoint(sm, "lost")


def test_weights_and_target_variant_choose_the_variant(gateway):
    sm, smr = gateway.sm(), gateway.smr()
    sm.create_model(
        ModelName="two-model",
        ExecutionRoleArn=ROLE,
        PrimaryContainer={"Image": TGI_IMAGE, "Environment": {"HF_MODEL_ID": "synthetic:1"}},
    )
    variants = [
        {
            "VariantName": name,
            "ModelName": "two-model",
            "InstanceType": "ml.m5.large",
            "InitialInstanceCount": 1,
            "InitialVariantWeight": weight,
        }
        for name, weight in (("Live", 1.0), ("Shadow", 0.0))
    ]
    sm.create_endpoint_config(EndpointConfigName="two", ProductionVariants=variants)
    sm.create_endpoint(EndpointName="two", EndpointConfigName="two")
    sm.get_waiter("endpoint_in_service").wait(
        EndpointName="two", WaiterConfig={"Delay": 0.2, "MaxAttempts": 300}
    )
    for _ in range(5):
        resp = smr.invoke_endpoint(EndpointName="two", Body=tgi_body(stream=False))
        assert resp["InvokedProductionVariant"] == "Live"
    resp = smr.invoke_endpoint_with_response_stream(
        EndpointName="two", TargetVariant="Shadow", Body=tgi_body()
    )
    assert resp["InvokedProductionVariant"] == "Shadow"
    payload_bytes(resp)
    with pytest.raises(ClientError) as raised:
        smr.invoke_endpoint(EndpointName="two", TargetVariant="Nope", Body=tgi_body())
    assert raised.value.response["Error"]["Code"] == "ValidationError"
    delete_endpoint(sm, "two")


def test_a_client_that_disconnects_cancels_the_generation(gateway):
    sm, smr = gateway.sm(), gateway.smr()
    create_synthetic_endpoint(sm, "quitter", count=1, delay_ms=5)
    resp = smr.invoke_endpoint_with_response_stream(
        EndpointName="quitter", Body=tgi_body(tokens=4000)
    )
    events = iter(resp["Body"])
    for _ in range(3):
        next(events)
    resp["Body"].close()  # drops the connection, as a closed browser tab would
    (record,) = instances(gateway, "quitter")
    wait_for(lambda: metric(record, "tgi_batch_current_size") == 0, what="generation to stop")
    assert metric(record, "streamhost_generated_tokens") < 1000
    route = gateway.app.router.variants("quitter")[0].instances[0]
    wait_for(lambda: route.outstanding == 0, what="the gateway to release the instance")
    delete_endpoint(sm, "quitter")
