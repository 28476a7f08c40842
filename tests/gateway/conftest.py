"""A real gateway on loopback (uvicorn on a thread) that starts real model-server processes."""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import psutil
import pytest
import uvicorn
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from streamhost.gateway.app import GatewayApp, create_gateway_app, server_config
from streamhost.gateway.settings import GatewaySettings
from streamhost.gateway.sigv4 import CredentialStore
from streamhost.gateway.store import sqlite_url

ACCESS_KEY = "AKIDSTREAMHOSTTEST"
SECRET_KEY = "streamhost-test-secret"
REGION = "us-east-1"
ACCOUNT = "123456789012"
ROLE = "arn:aws:iam::123456789012:role/service-role/AmazonSageMaker-ExecutionRole"
TGI_IMAGE = (
    "763104351884.dkr.ecr.us-east-1.amazonaws.com/"
    "huggingface-pytorch-tgi-inference:2.0.1-tgi0.9.3-gpu-py39-cu118-ubuntu20.04"
)
LMI_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/djl-inference:0.23.0-deepspeed0.9.5-cu118"
FAST = {"Delay": 0.2, "MaxAttempts": 600}


class LiveGateway:
    """The gateway app served by uvicorn on a free loopback port, in a thread."""

    def __init__(self, state_dir: Path, **overrides: Any) -> None:
        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "state_url": sqlite_url(state_dir / "gateway.db"),
            "state_dir": state_dir,
            "credentials": CredentialStore({ACCESS_KEY: SECRET_KEY}),
            "region": REGION,
            "account": ACCOUNT,
            "instance_environment": dict(os.environ),
            "health_interval": 0.3,
            "stop_timeout": 10.0,
            "drain_timeout": 10.0,
        }
        values.update(overrides)
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        values["port"] = self.socket.getsockname()[1]
        self.settings = GatewaySettings(**values)
        self.app: GatewayApp = create_gateway_app(self.settings)
        self.url = f"http://127.0.0.1:{values['port']}"
        self.server = uvicorn.Server(server_config(self.settings, self.app, log_level="warning"))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True
        )

    def start(self) -> LiveGateway:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("gateway failed to start")
            assert time.monotonic() < deadline, "gateway did not start"
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(60)
        assert not self.thread.is_alive(), "gateway did not stop"
        self.socket.close()

    def sm(self, **config: Any) -> Any:
        return client("sagemaker", self.url, **config)

    def smr(self, **config: Any) -> Any:
        return client("sagemaker-runtime", self.url, **config)


def client(
    service: str,
    url: str,
    secret: str = SECRET_KEY,
    *,
    verify: str | bool | None = None,
    **config: Any,
) -> Any:
    """A boto3 client for the gateway; no retries, so every error is seen as it is.
    `verify`: for HTTPS, a CA bundle to trust (or False/True, as boto3 takes it)."""
    options = {"retries": {"total_max_attempts": 1}, "read_timeout": 120, **config}
    return boto3.session.Session().client(
        service,
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=secret,
        verify=verify,
        config=Config(**options),
    )


@contextlib.contextmanager
def running_gateway(state_dir: Path, **overrides: Any) -> Iterator[LiveGateway]:
    """A started `LiveGateway`; on leaving, it stops and no model server may be left."""
    live = LiveGateway(state_dir, **overrides).start()
    try:
        yield live
    finally:
        live.stop()
        assert_no_instances_left()


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[LiveGateway]:
    with running_gateway(tmp_path / "state") as live:
        yield live


def model_servers() -> list[psutil.Process]:
    """Model-server processes this test process started (children, at any depth)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "serve-model" in child.cmdline() and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child)
    return found


def assert_no_instances_left(timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while model_servers() and time.monotonic() < deadline:
        time.sleep(0.1)
    left = model_servers()
    assert not left, f"model servers still running: {[p.pid for p in left]}"
    zombies = [p for p in psutil.Process().children(recursive=True) if _zombie(p)]
    assert not zombies, f"unreaped children: {[p.pid for p in zombies]}"


def _zombie(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def create_synthetic_endpoint(
    sm: Any,
    name: str,
    *,
    count: int = 1,
    delay_ms: int = 5,
    variants: list[dict[str, Any]] | None = None,
    wait: bool = True,
    environment: dict[str, str] | None = None,
    image: str = TGI_IMAGE,
) -> None:
    """Model (TGI image, synthetic model) + config + endpoint, waited until InService."""
    sm.create_model(
        ModelName=f"{name}-model",
        ExecutionRoleArn=ROLE,
        PrimaryContainer={
            "Image": image,
            "Environment": environment or {"HF_MODEL_ID": f"synthetic:{delay_ms}"},
        },
    )
    sm.create_endpoint_config(
        EndpointConfigName=f"{name}-config",
        ProductionVariants=variants
        or [
            {
                "VariantName": "AllTraffic",
                "ModelName": f"{name}-model",
                "InstanceType": "ml.m5.xlarge",
                "InitialInstanceCount": count,
            }
        ],
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-config")
    if wait:
        wait_in_service(sm, name)


def wait_in_service(sm: Any, name: str) -> None:
    try:
        sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig=FAST)
    except Exception:
        reason = sm.describe_endpoint(EndpointName=name).get("FailureReason")
        raise AssertionError(f"endpoint {name} did not reach InService: {reason}") from None


def delete_endpoint(sm: Any, name: str) -> None:
    sm.delete_endpoint(EndpointName=name)
    sm.get_waiter("endpoint_deleted").wait(EndpointName=name, WaiterConfig=FAST)


def signed_headers(
    url: str,
    body: bytes,
    headers: dict[str, str] | None = None,
    *,
    secret: str = SECRET_KEY,
    method: str = "POST",
) -> dict[str, str]:
    """The headers boto3 would send for this request (SigV4 by botocore's signer)."""
    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    SigV4Auth(Credentials(ACCESS_KEY, secret), "sagemaker", REGION).add_auth(request)
    return dict(request.prepare().headers)


def tgi_body(text: str = "hello", tokens: int = 5, stream: bool = True) -> bytes:
    return json.dumps(
        {"inputs": text, "parameters": {"max_new_tokens": tokens}, "stream": stream}
    ).encode()


def targz(files: dict[str, bytes]) -> bytes:
    """A .tar.gz holding `files` (path → content)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def wait_for(condition: Any, timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll `condition` until it is truthy (its value is returned), failing after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def error_of(raised: pytest.ExceptionInfo) -> tuple[int, str, str]:
    """(HTTP status, error code, message) of a botocore `ClientError`."""
    response = raised.value.response
    return (
        response["ResponseMetadata"]["HTTPStatusCode"],
        response["Error"]["Code"],
        response["Error"]["Message"],
    )


def payload_bytes(response: dict[str, Any]) -> bytes:
    """Every PayloadPart of a boto3 response stream, concatenated."""
    return b"".join(
        event["PayloadPart"]["Bytes"] for event in response["Body"] if "PayloadPart" in event
    )
