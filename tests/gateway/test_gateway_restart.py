"""A gateway restart loses no endpoint, and leaves no process behind."""

from __future__ import annotations

import dataclasses

import psutil
import pytest

from streamhost.gateway.store import Store
from tests.harness import (
    GatewayThread,
    assert_no_model_servers,
    create_synthetic_endpoint,
    delete_endpoint,
    model_servers,
    payload_bytes,
    tgi_body,
    wait_in_service,
)

# Gateways stopped and started again over the same model-server processes.
pytestmark = pytest.mark.slow


def pids(gateway, endpoint: str) -> set[int]:
    return {r.pid for r in gateway.app.store.list_instances(endpoint)}


def invoke(gateway, endpoint: str) -> bytes:
    resp = gateway.smr().invoke_endpoint_with_response_stream(
        EndpointName=endpoint, Body=tgi_body()
    )
    return payload_bytes(resp)


def test_after_a_restart_the_endpoint_is_in_service_again(tmp_path):
    state = tmp_path / "state"
    first = GatewayThread(state).start()
    create_synthetic_endpoint(first.sm(), "survivor", count=2)
    first.stop()
    assert_no_model_servers()  # a clean shutdown stops its instances

    second = GatewayThread(state).start()
    try:
        wait_in_service(second.sm(), "survivor")
        assert b"generated_text" in invoke(second, "survivor")
        assert len(pids(second, "survivor")) == 2
        delete_endpoint(second.sm(), "survivor")
    finally:
        second.stop()
    assert_no_model_servers()


def test_the_first_endpoint_comes_back_before_the_others_start(tmp_path):
    # `streamhost up` names `default`: the state's other endpoints must not compete with it
    # for the machine while it starts.
    state = tmp_path / "state"
    first = GatewayThread(state).start()
    names = ("alpha", "default", "omega")
    for name in names:
        create_synthetic_endpoint(first.sm(), name)
    first.stop()

    second = GatewayThread(state, first_endpoint="default").start()
    try:
        for name in names:
            wait_in_service(second.sm(), name)
        started = {
            name: psutil.Process(pid).create_time() for name in names for pid in pids(second, name)
        }
        # The others' servers were started once default's had passed its health check,
        # which takes a Python start.
        assert min(started["alpha"], started["omega"]) > started["default"] + 0.2
        for name in names:
            delete_endpoint(second.sm(), name)
    finally:
        second.stop()
    assert_no_model_servers()


def test_instances_left_running_are_adopted_by_the_next_gateway(tmp_path):
    state = tmp_path / "state"
    first = GatewayThread(state, keep_instances=True).start()
    create_synthetic_endpoint(first.sm(), "adoptee", count=2)
    before = pids(first, "adoptee")
    first.stop()  # as if the gateway had crashed: the instances keep running
    assert {p.pid for p in model_servers()} == before

    second = GatewayThread(state).start()
    try:
        wait_in_service(second.sm(), "adoptee")
        assert pids(second, "adoptee") == before
        assert b"generated_text" in invoke(second, "adoptee")
        delete_endpoint(second.sm(), "adoptee")
    finally:
        second.stop()
    assert_no_model_servers()


def test_an_instance_that_fails_the_adoption_checks_is_killed_and_replaced(tmp_path):
    state = tmp_path / "state"
    first = GatewayThread(state, keep_instances=True).start()
    create_synthetic_endpoint(first.sm(), "impostor", count=2)
    records = first.app.store.list_instances("impostor")
    first.stop()
    # One record no longer matches its process (as if the process were someone else's).
    tampered = dataclasses.replace(records[0], secret="not-the-secret")
    store = Store.open(first.settings.state_url)
    store.put_instance(tampered)
    store.close()

    second = GatewayThread(state).start()
    try:
        wait_in_service(second.sm(), "impostor")
        now = pids(second, "impostor")
        assert records[1].pid in now  # adopted
        assert records[0].pid not in now  # killed, and a fresh instance started
        assert not psutil.pid_exists(records[0].pid) or _zombie_or_gone(records[0].pid)
        assert len(now) == 2
        delete_endpoint(second.sm(), "impostor")
    finally:
        second.stop()
    assert_no_model_servers()


def test_instances_of_an_endpoint_that_is_not_restored_are_stopped(tmp_path):
    state = tmp_path / "state"
    first = GatewayThread(state, keep_instances=True).start()
    create_synthetic_endpoint(first.sm(), "forgotten")
    (record,) = first.app.store.list_instances("forgotten")
    first.app.store.update_endpoint("forgotten", status="Failed", failure_reason="test")
    first.stop()
    assert psutil.pid_exists(record.pid)

    second = GatewayThread(state).start()
    try:
        assert_no_model_servers()
        assert second.app.store.list_instances("forgotten") == []
        second.sm().delete_endpoint(EndpointName="forgotten")
    finally:
        second.stop()


def test_a_delete_interrupted_by_a_crash_finishes_and_kills_the_instances(tmp_path):
    state = tmp_path / "state"
    first = GatewayThread(state, keep_instances=True).start()
    create_synthetic_endpoint(first.sm(), "doomed")
    (record,) = first.app.store.list_instances("doomed")
    first.stop()
    # As if the gateway died right after accepting DeleteEndpoint.
    store = Store.open(first.settings.state_url)
    store.update_endpoint("doomed", status="Deleting")
    store.close()
    assert psutil.pid_exists(record.pid)

    second = GatewayThread(state).start()
    try:
        second.sm().get_waiter("endpoint_deleted").wait(
            EndpointName="doomed", WaiterConfig={"Delay": 0.2, "MaxAttempts": 100}
        )
    finally:
        second.stop()
    assert_no_model_servers()


def _zombie_or_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True
