"""Broken deployments end `Failed` with a `FailureReason` that says what to fix, and leave
nothing running. (A `../` member is refused in tests/gateway/test_provisioner.py, an image
streamhost cannot run at CreateModel in tests/gateway/test_runtime_errors.py.)"""

from __future__ import annotations

import io
import socket
import tarfile
import time

import pytest

from streamhost.gateway import launcher
from tests.harness import (
    LMI_IMAGE,
    ROLE,
    TGI_IMAGE,
    GatewayThread,
    assert_no_model_servers,
    create_synthetic_endpoint,
    delete_endpoint,
    model_servers,
    targz,
    wait_in_service,
)

from .streaming import report

pytestmark = pytest.mark.reliability

TINY_CONFIG = b'{"model_type": "llama", "vocab_size": 16}'


def symlink_out() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("weights")
        info.type = tarfile.SYMTYPE
        info.linkname = "../../../../../etc"
        tar.addfile(info)
    return buffer.getvalue()


BROKEN = {
    "corrupt": (LMI_IMAGE, b"\x1f\x8b\x08garbage" * 10, {}, "is not a valid .tar.gz archive"),
    "truncated": (LMI_IMAGE, targz({"serving.properties": b"x" * 4096})[:40], {}, "not a valid"),
    "empty": (LMI_IMAGE, targz({}), {}, "is empty"),
    "escaping-link": (LMI_IMAGE, symlink_out(), {}, "is unsafe: member 'weights' is a symbolic"),
    "no-weights": (
        LMI_IMAGE,
        targz(
            {
                "serving.properties": b"option.model_id=./weights\n",
                "weights/config.json": TINY_CONFIG,
            }
        ),
        {},
        "weights has no weights: put the model's *.safetensors",
    ),
    "no-folder": (
        LMI_IMAGE,
        targz({"serving.properties": b"option.model_id=./weights\n"}),
        {},
        "/model/weights does not exist",
    ),
    "no-tokenizer": (
        TGI_IMAGE,
        targz({"config.json": TINY_CONFIG, "model.safetensors": b"{}"}),
        {"HF_MODEL_ID": "/opt/ml/model"},
        "has no tokenizer: put the model's tokenizer.json",
    ),
    "bad-setting": (
        TGI_IMAGE,
        None,
        {"HF_MODEL_ID": "synthetic:1", "MAX_CONCURRENT_REQUESTS": "many"},
        "MAX_CONCURRENT_REQUESTS",
    ),
}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    live = GatewayThread(tmp_path_factory.mktemp("broken") / "state").start()
    yield live
    live.stop()
    assert_no_model_servers()


def failure_reason(sm, name: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while (described := sm.describe_endpoint(EndpointName=name))["EndpointStatus"] == "Creating":
        assert time.monotonic() < deadline, f"{name} is still Creating"
        time.sleep(0.1)
    assert described["EndpointStatus"] == "Failed"
    return described["FailureReason"]


def deploy(sm, name: str, image: str, environment: dict, data_url: str | None) -> None:
    container = {"Image": image, "Environment": environment}
    if data_url:
        container["ModelDataUrl"] = data_url
    sm.create_model(ModelName=name, ExecutionRoleArn=ROLE, PrimaryContainer=container)
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": "v",
                "ModelName": name,
                "InstanceType": "ml.m5.large",
                "InitialInstanceCount": 1,
            }
        ],
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_deployment_fails_with_a_reason_that_says_what_to_fix(gateway, tmp_path, case):
    image, archive, environment, expected = BROKEN[case]
    source = tmp_path / "model.tar.gz"
    if archive is not None:
        source.write_bytes(archive)
    sm = gateway.sm()
    deploy(sm, case, image, environment, str(source) if archive is not None else None)
    reason = failure_reason(sm, case)
    report("broken deployment", case=case, failure_reason=reason[:300])
    assert expected in reason
    assert "\n" not in reason
    assert not model_servers()
    delete_endpoint(sm, case)


@pytest.fixture
def taken_port(monkeypatch):
    """Every instance is offered a port another process is listening on."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    offers = []

    def offer(host: str) -> int:
        offers.append(port)
        return port

    monkeypatch.setattr(launcher, "free_port", offer)
    yield offers
    holder.close()


def test_a_port_that_stays_taken_fails_the_endpoint_naming_it(gateway, taken_port):
    sm = gateway.sm()
    create_synthetic_endpoint(sm, "crowded-port", wait=False)
    reason = failure_reason(sm, "crowded-port")
    report("broken deployment", case="port in use", failure_reason=reason[:300])
    assert "could not listen on 127.0.0.1: each of the 3 free ports" in reason
    assert "address already in use" in reason.lower()
    assert len(taken_port) == 3  # tried three times, each time on a port it was offered
    delete_endpoint(sm, "crowded-port")


def test_a_port_taken_once_is_retried_on_another(gateway, monkeypatch):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    choose = launcher.free_port
    offers: list[int] = []

    def offer(host: str) -> int:
        offers.append(holder.getsockname()[1] if not offers else choose(host))
        return offers[-1]

    monkeypatch.setattr(launcher, "free_port", offer)
    try:
        sm = gateway.sm()
        create_synthetic_endpoint(sm, "second-try", wait=False)
        wait_in_service(sm, "second-try")
        (record,) = gateway.app.store.list_instances("second-try")
        assert record.port == offers[-1] != offers[0]
        delete_endpoint(sm, "second-try")
    finally:
        holder.close()
