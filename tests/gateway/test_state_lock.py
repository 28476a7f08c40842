"""One gateway per state: a second one refuses in one line and touches nothing; a gateway
killed outright leaves a lock the next one takes; a model folder or instance that vanishes
under a running gateway is put back or fails the endpoint with its reason, in a few log
lines, never a traceback loop."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import psutil
import pytest

from streamhost.gateway.state_lock import Holder
from tests.harness import (
    GatewayProcess,
    assert_no_model_servers,
    create_synthetic_endpoint,
    delete_endpoint,
    payload_bytes,
    targz,
    tgi_body,
    wait_for,
    wait_in_service,
)

# Gateway processes started, killed and started again on one state.
pytestmark = pytest.mark.slow


def invoke(gateway: GatewayProcess, endpoint: str) -> bytes:
    response = gateway.smr().invoke_endpoint_with_response_stream(
        EndpointName=endpoint, Body=tgi_body()
    )
    return payload_bytes(response)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def kill_instance(pid: int) -> None:
    """As another gateway's shutdown did: the instance's process group is killed."""
    os.killpg(pid, signal.SIGKILL)
    wait_for(lambda: not alive(pid), what=f"instance {pid} to die")


def test_a_second_gateway_on_one_state_refuses_in_one_line_and_the_first_keeps_serving(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    first = GatewayProcess(state).start()
    try:
        create_synthetic_endpoint(first.sm(), "kept", count=2)
        before = {r.pid for r in first.instances("kept")}

        second = GatewayProcess(state)  # same state, another port
        second.log = tmp_path / "second.log"
        with pytest.raises(AssertionError, match="gateway exited"):
            second.start(timeout=30)
        assert second.popen is not None and second.popen.returncode == 1
        lines = second.log_text().splitlines()
        assert len(lines) == 1, lines
        assert f"pid {first.pid}" in lines[0]
        assert first.url in lines[0]
        assert "--state" in lines[0]

        # The first one's instances are as they were, and serve.
        assert {r.pid for r in first.instances("kept")} == before
        assert all(alive(pid) for pid in before)
        assert b"generated_text" in invoke(first, "kept")
        assert (state / "endpoints" / "kept").is_dir()
        delete_endpoint(first.sm(), "kept")
    finally:
        first.stop()
    assert_no_model_servers(state)


def test_a_postgresql_state_without_its_driver_or_server_is_one_line(tmp_path: Path) -> None:
    # Nothing listens on port 1: with psycopg installed, the connection is refused; without
    # it, the driver is missing. Either way one line, exit status 1, no traceback.
    gateway = GatewayProcess(tmp_path / "state", "--state", "postgresql://u:p@127.0.0.1:1/x")
    gateway.log = tmp_path / "gateway.log"
    with pytest.raises(AssertionError, match="gateway exited"):
        gateway.start(timeout=30)
    assert gateway.popen is not None and gateway.popen.returncode == 1
    (line,) = gateway.log_text().splitlines()
    assert line.startswith("streamhost gateway: ")
    try:
        import psycopg  # noqa: F401
    except ModuleNotFoundError:
        assert "needs its driver, psycopg" in line and "pip install" in line
    else:
        assert "cannot lock the state database" in line


def test_a_gateway_killed_outright_leaves_a_lock_the_next_one_takes(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = GatewayProcess(state).start()
    try:
        create_synthetic_endpoint(first.sm(), "orphan")
        before = {r.pid for r in first.instances("orphan")}
    finally:
        first.kill()  # SIGKILL: the kernel drops its lock; its instances live on

    second = GatewayProcess(state).start(timeout=30)
    try:
        record = Holder.from_json((state / "gateway.lock").read_text())
        assert record == Holder(pid=second.pid, url=second.url)
        wait_in_service(second.sm(), "orphan")
        assert {r.pid for r in second.instances("orphan")} == before  # adopted by the owner
        assert b"generated_text" in invoke(second, "orphan")
        delete_endpoint(second.sm(), "orphan")
    finally:
        second.stop()
    assert_no_model_servers(state)


def test_a_deployment_folder_deleted_under_a_running_gateway_comes_back_with_a_new_instance(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    gateway = GatewayProcess(state).start()
    try:
        create_synthetic_endpoint(gateway.sm(), "wiped")
        (record,) = gateway.instances("wiped")
        shutil.rmtree(state / "endpoints" / "wiped")
        kill_instance(record.pid)

        def replaced() -> bool:
            records = gateway.instances("wiped")
            return any(r.pid != record.pid and r.state == "InService" for r in records)

        wait_for(replaced, 60, "a replacement instance")
        assert Path(gateway.instances("wiped")[0].detail["model_dir"]).is_dir()
        assert b"generated_text" in invoke(gateway, "wiped")
        settled = gateway.log_text()
        time.sleep(5)  # a few health checks: nothing more to say
        assert gateway.log_text() == settled
        assert "Traceback" not in settled
        assert len(settled.splitlines()) <= 4, settled
        delete_endpoint(gateway.sm(), "wiped")
    finally:
        gateway.stop()
    assert_no_model_servers(state)


def test_an_endpoint_whose_model_data_vanished_too_fails_with_the_reason_in_a_few_lines(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    archive = tmp_path / "data" / "model.tar.gz"
    archive.parent.mkdir()
    archive.write_bytes(targz({"notes.txt": b"model data"}))
    gateway = GatewayProcess(state).start()
    try:
        sm = gateway.sm()
        create_synthetic_endpoint(sm, "gone", model_data=archive.as_uri())
        (record,) = gateway.instances("gone")
        archive.unlink()
        shutil.rmtree(state / "endpoints" / "gone")
        kill_instance(record.pid)

        def failed() -> dict | None:
            described = sm.describe_endpoint(EndpointName="gone")
            return described if described["EndpointStatus"] == "Failed" else None

        reason = wait_for(failed, 90, "the endpoint to fail")["FailureReason"]
        assert "Variant AllTraffic lost its instances" in reason
        assert str(archive) in reason, reason
        assert gateway.instances("gone") == []
        text = gateway.log_text()
        assert "Traceback" not in text
        # One line for the loss, one per failed replacement, one for the failure.
        assert len(text.splitlines()) <= 6, text
        delete_endpoint(sm, "gone")
    finally:
        gateway.stop()
    assert_no_model_servers(state)
