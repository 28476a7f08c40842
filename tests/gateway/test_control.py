"""The control plane through real boto3 `sagemaker` clients against a real uvicorn server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, WaiterError
from starlette.applications import Starlette

from streamhost.gateway.control import OPERATIONS, ControlPlane
from streamhost.gateway.control_app import control_routes
from streamhost.gateway.errors import AwsError
from streamhost.gateway.lifecycle import DeployFailed, EndpointDeployer
from streamhost.gateway.settings import sqlite_url
from streamhost.gateway.store import Store
from streamhost.gateway.validation import sagemaker_model, validate_shape
from tests.harness import ServerThread

IMAGE = (
    "763104351884.dkr.ecr.us-east-1.amazonaws.com/"
    "huggingface-pytorch-tgi-inference:2.0.1-tgi0.9.3-gpu-py39-cu118-ubuntu20.04"
)
ROLE = "arn:aws:iam::123456789012:role/service-role/AmazonSageMaker-ExecutionRole"
ARN = "arn:aws:sagemaker:us-east-1:123456789012"
FAST = {"Delay": 0.02, "MaxAttempts": 250}

_session = boto3.session.Session(
    aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
)


class FakeDeployer:
    """An EndpointDeployer that records calls; deploys can be slowed, held or made to fail."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.calls: list[tuple[str, str, str | None]] = []
        self.running: dict[str, dict[str, int]] = {}
        self.failures: dict[str, str] = {}  # endpoint config name -> FailureReason
        self.gate = threading.Event()
        self.gate.set()

    async def deploy(
        self, endpoint_name: str, config: dict[str, Any], models: dict[str, dict]
    ) -> None:
        self.calls.append(("deploy", endpoint_name, config["EndpointConfigName"]))
        for variant in config["ProductionVariants"]:
            assert variant["ModelName"] in models
        while not self.gate.is_set():
            await asyncio.sleep(0.005)
        await asyncio.sleep(self.delay)
        reason = self.failures.get(config["EndpointConfigName"])
        if reason is not None:
            raise DeployFailed(reason)
        self.running[endpoint_name] = {
            v["VariantName"]: v.get("InitialInstanceCount", 1) for v in config["ProductionVariants"]
        }

    async def undeploy(self, endpoint_name: str) -> None:
        self.calls.append(("undeploy", endpoint_name, None))
        self.running.pop(endpoint_name, None)

    async def scale(self, endpoint_name: str, desired: dict) -> None:
        self.calls.append(("scale", endpoint_name, None))
        for variant, (_, count) in desired.items():
            if count is not None:
                self.running[endpoint_name][variant] = count

    def instance_counts(self, endpoint_name: str) -> dict[str, int]:
        return dict(self.running.get(endpoint_name, {}))


class Gateway:
    """A uvicorn server on a free loopback port, in a thread, serving a ControlPlane."""

    def __init__(self, db: Path, deployer: FakeDeployer, restore: bool = False) -> None:
        self.store = Store.open(sqlite_url(db))
        self.deployer = deployer
        self.control = ControlPlane(self.store, deployer)
        self.loop: asyncio.AbstractEventLoop | None = None

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette):
            self.loop = asyncio.get_running_loop()
            if restore:
                await self.control.restore()
            yield
            await self.control.close()

        self.server = ServerThread(
            Starlette(routes=control_routes(self.control), lifespan=lifespan)
        )
        self.url = self.server.url

    def __enter__(self) -> Gateway:
        self.server.start(timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        # Shutdown cancels deployments still held at the gate: they stay Creating in the
        # store, as after a crash, for the restart tests.
        self.server.stop(10)
        self.store.close()

    def run(self, coro: Any) -> Any:
        """Run a coroutine on the server's event loop and return its result."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def client(self) -> Any:
        return _session.client(
            "sagemaker",
            endpoint_url=self.url,
            config=Config(retries={"total_max_attempts": 1}),
        )

    def post(self, body: bytes, target: str | None = "SageMaker.DescribeEndpoint") -> tuple:
        """A raw JSON 1.1 request: (status, headers, decoded body)."""
        headers = {"Content-Type": "application/x-amz-json-1.1"}
        if target is not None:
            headers["X-Amz-Target"] = target
        request = urllib.request.Request(self.url + "/", data=body, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.headers, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, error.headers, json.loads(error.read())


@pytest.fixture
def deployer() -> FakeDeployer:
    return FakeDeployer(delay=0.02)


@pytest.fixture
def gateway(tmp_path: Path, deployer: FakeDeployer) -> Iterator[Gateway]:
    with Gateway(tmp_path / "state.db", deployer) as gw:
        yield gw


@pytest.fixture
def sm(gateway: Gateway) -> Any:
    return gateway.client()


def create_model(sm: Any, name: str = "tgi-model", **extra: Any) -> dict:
    return sm.create_model(
        ModelName=name,
        ExecutionRoleArn=ROLE,
        PrimaryContainer={
            "Image": IMAGE,
            "ModelDataUrl": "s3://bucket/model.tar.gz",
            "Environment": {"HF_MODEL_ID": "tiny", "SM_NUM_GPUS": "1"},
        },
        **extra,
    )


def create_config(sm: Any, name: str, model: str = "tgi-model", count: int = 1) -> dict:
    return sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": model,
                "InstanceType": "ml.g5.2xlarge",
                "InitialInstanceCount": count,
            }
        ],
    )


def deploy(sm: Any, endpoint: str, config: str | None = None) -> None:
    """Model + config + endpoint, waited until InService."""
    if config is None:
        config = endpoint
    with contextlib.suppress(ClientError):
        create_model(sm)
    create_config(sm, config)
    sm.create_endpoint(EndpointName=endpoint, EndpointConfigName=config)
    sm.get_waiter("endpoint_in_service").wait(EndpointName=endpoint, WaiterConfig=FAST)


def error_of(call: Any, **kwargs: Any) -> dict:
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    return info.value.response


# -- the notebook flow -----------------------------------------------------------------


def test_notebook_flow_deploys_updates_and_deletes_an_endpoint(gateway: Gateway, sm: Any):
    model = create_model(sm)
    assert model["ModelArn"] == f"{ARN}:model/tgi-model"
    config = create_config(sm, "tgi-config", count=2)
    assert config["EndpointConfigArn"] == f"{ARN}:endpoint-config/tgi-config"

    created = sm.create_endpoint(EndpointName="My-Endpoint", EndpointConfigName="tgi-config")
    assert created["EndpointArn"] == f"{ARN}:endpoint/my-endpoint"
    assert created["ResponseMetadata"]["RequestId"]
    sm.get_waiter("endpoint_in_service").wait(EndpointName="My-Endpoint", WaiterConfig=FAST)

    described = sm.describe_endpoint(EndpointName="My-Endpoint")
    assert described["EndpointName"] == "My-Endpoint"
    assert described["EndpointStatus"] == "InService"
    assert described["EndpointConfigName"] == "tgi-config"
    assert "FailureReason" not in described
    (variant,) = described["ProductionVariants"]
    assert variant["VariantName"] == "AllTraffic"
    assert variant["CurrentInstanceCount"] == 2
    assert variant["DesiredInstanceCount"] == 2
    assert variant["CurrentWeight"] == variant["DesiredWeight"] == 1.0
    assert variant["DeployedImages"][0]["SpecifiedImage"] == IMAGE
    assert described["LastModifiedTime"] >= described["CreationTime"]

    create_config(sm, "tgi-config-2", count=1)
    sm.update_endpoint(EndpointName="My-Endpoint", EndpointConfigName="tgi-config-2")
    assert sm.describe_endpoint(EndpointName="My-Endpoint")["EndpointStatus"] == "Updating"
    sm.get_waiter("endpoint_in_service").wait(EndpointName="My-Endpoint", WaiterConfig=FAST)
    updated = sm.describe_endpoint(EndpointName="My-Endpoint")
    assert updated["EndpointConfigName"] == "tgi-config-2"
    assert updated["ProductionVariants"][0]["CurrentInstanceCount"] == 1

    sm.delete_endpoint(EndpointName="My-Endpoint")
    sm.get_waiter("endpoint_deleted").wait(EndpointName="My-Endpoint", WaiterConfig=FAST)
    sm.delete_endpoint_config(EndpointConfigName="tgi-config")
    sm.delete_endpoint_config(EndpointConfigName="tgi-config-2")
    sm.delete_model(ModelName="tgi-model")

    assert sm.list_endpoints()["Endpoints"] == []
    assert sm.list_endpoint_configs()["EndpointConfigs"] == []
    assert sm.list_models()["Models"] == []
    assert gateway.deployer.calls == [
        ("deploy", "My-Endpoint", "tgi-config"),
        ("deploy", "My-Endpoint", "tgi-config-2"),
        ("undeploy", "My-Endpoint", None),
    ]


def test_create_endpoint_answers_creating_before_the_deployment_finishes(gateway: Gateway, sm: Any):
    gateway.deployer.gate.clear()
    create_model(sm)
    create_config(sm, "cfg")
    sm.create_endpoint(EndpointName="ep", EndpointConfigName="cfg")
    described = sm.describe_endpoint(EndpointName="ep")
    assert described["EndpointStatus"] == "Creating"
    assert described["ProductionVariants"][0]["CurrentInstanceCount"] == 0
    assert described["ProductionVariants"][0]["VariantStatus"][0]["Status"] == "Creating"
    gateway.deployer.gate.set()
    sm.get_waiter("endpoint_in_service").wait(EndpointName="ep", WaiterConfig=FAST)


def test_describe_model_and_config_return_what_was_created(sm: Any):
    create_model(sm, Tags=[{"Key": "team", "Value": "llm"}])
    create_config(sm, "cfg")
    model = sm.describe_model(ModelName="tgi-model")
    assert model["PrimaryContainer"]["Environment"] == {"HF_MODEL_ID": "tiny", "SM_NUM_GPUS": "1"}
    assert model["PrimaryContainer"]["ModelDataUrl"] == "s3://bucket/model.tar.gz"
    assert model["ExecutionRoleArn"] == ROLE
    assert model["CreationTime"].tzinfo is not None
    config = sm.describe_endpoint_config(EndpointConfigName="cfg")
    (variant,) = config["ProductionVariants"]
    assert variant["InstanceType"] == "ml.g5.2xlarge"
    assert variant["InitialVariantWeight"] == 1.0
    assert sm.list_tags(ResourceArn=model_arn("tgi-model"))["Tags"] == [
        {"Key": "team", "Value": "llm"}
    ]


def model_arn(name: str) -> str:
    return f"{ARN}:model/{name}"


def test_list_endpoints_pages_sorts_and_filters(gateway: Gateway, sm: Any):
    create_model(sm)
    names = ["alpha", "bravo", "charlie", "delta", "echo"]
    for name in names:
        create_config(sm, name)
        sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    gateway.run(gateway.control.wait_idle())

    pages = list(
        sm.get_paginator("list_endpoints").paginate(
            SortBy="Name", SortOrder="Ascending", PaginationConfig={"PageSize": 2}
        )
    )
    assert [len(page["Endpoints"]) for page in pages] == [2, 2, 1]
    assert [e["EndpointName"] for page in pages for e in page["Endpoints"]] == names

    newest_first = sm.list_endpoints(MaxResults=100)["Endpoints"]
    assert [e["EndpointName"] for e in newest_first] == names[::-1]
    assert sm.list_endpoints(NameContains="HAR")["Endpoints"][0]["EndpointName"] == "charlie"
    assert len(sm.list_endpoints(StatusEquals="InService")["Endpoints"]) == 5
    assert sm.list_endpoints(StatusEquals="Failed")["Endpoints"] == []
    later = sm.list_endpoints(CreationTimeAfter=time.time() + 60)["Endpoints"]
    assert later == []

    configs = sm.list_endpoint_configs(SortBy="Name", SortOrder="Descending", MaxResults=3)
    assert [c["EndpointConfigName"] for c in configs["EndpointConfigs"]] == names[:1:-1]
    rest = sm.list_endpoint_configs(
        SortBy="Name", SortOrder="Descending", NextToken=configs["NextToken"]
    )
    assert [c["EndpointConfigName"] for c in rest["EndpointConfigs"]] == ["bravo", "alpha"]
    assert "NextToken" not in rest


def test_sdk_deletes_the_config_before_the_endpoint(sm: Any):
    deploy(sm, "ep")
    config = sm.describe_endpoint(EndpointName="ep")["EndpointConfigName"]
    sm.delete_endpoint_config(EndpointConfigName=config)
    sm.delete_endpoint(EndpointName="ep")
    sm.get_waiter("endpoint_deleted").wait(EndpointName="ep", WaiterConfig=FAST)


def test_tags_can_be_added_listed_and_deleted(sm: Any):
    deploy(sm, "ep")
    arn = f"{ARN}:endpoint/ep"
    sm.add_tags(ResourceArn=arn, Tags=[{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "2"}])
    sm.add_tags(ResourceArn=arn, Tags=[{"Key": "a", "Value": "3"}])
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [
        {"Key": "a", "Value": "3"},
        {"Key": "b", "Value": "2"},
    ]
    sm.delete_tags(ResourceArn=arn, TagKeys=["a"])
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [{"Key": "b", "Value": "2"}]
    missing = error_of(sm.list_tags, ResourceArn=f"{ARN}:endpoint/nope")
    assert missing["Error"]["Message"] == f'Could not find endpoint "{ARN}:endpoint/nope".'


# -- errors, as SageMaker words them ---------------------------------------------------


def test_describe_unknown_endpoint_is_a_validation_exception(sm: Any):
    response = error_of(sm.describe_endpoint, EndpointName="nope")
    assert response["Error"]["Code"] == "ValidationException"
    assert response["Error"]["Message"] == f'Could not find endpoint "{ARN}:endpoint/nope".'
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert response["ResponseMetadata"]["RequestId"]


def test_creating_an_existing_model_is_rejected(sm: Any):
    create_model(sm, "Dup")
    response = error_of(create_model, sm=sm, name="dup")
    assert response["Error"]["Code"] == "ValidationException"
    assert response["Error"]["Message"] == (
        f'Cannot create already existing model "{ARN}:model/dup".'
    )


def test_creating_existing_config_and_endpoint_is_rejected(sm: Any):
    deploy(sm, "ep", "cfg")
    response = error_of(create_config, sm=sm, name="cfg")
    assert response["Error"]["Message"] == (
        f'Cannot create already existing endpoint configuration "{ARN}:endpoint-config/cfg".'
    )
    response = error_of(sm.create_endpoint, EndpointName="EP", EndpointConfigName="cfg")
    assert response["Error"]["Message"] == (
        f'Cannot create already existing endpoint "{ARN}:endpoint/ep".'
    )


def test_bad_endpoint_name_gets_the_aws_validation_message(gateway: Gateway):
    # botocore validates names client-side, so send the request as raw JSON.
    status, _, body = gateway.post(b'{"EndpointName": "my_endpoint"}')
    assert status == 400
    assert body == {
        "__type": "ValidationException",
        "message": "1 validation error detected: Value 'my_endpoint' at 'endpointName' "
        "failed to satisfy constraint: Member must satisfy regular expression pattern: "
        "^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}",
    }


def test_missing_required_field_is_a_validation_exception(gateway: Gateway):
    status, _, body = gateway.post(b'{"EndpointName": "ep"}', target="SageMaker.CreateEndpoint")
    assert status == 400
    assert body["__type"] == "ValidationException"
    assert body["message"] == (
        "1 validation error detected: Value null at 'endpointConfigName' failed to satisfy "
        "constraint: Member must not be null"
    )


def test_malformed_json_is_a_serialization_exception(gateway: Gateway):
    status, headers, body = gateway.post(b'{"EndpointName": ')
    assert status == 400
    assert body["__type"] == "SerializationException"
    assert headers["Content-Type"] == "application/x-amz-json-1.1"
    assert headers["x-amzn-RequestId"]


def test_wrong_json_type_is_a_serialization_exception(gateway: Gateway):
    status, _, body = gateway.post(b'{"EndpointName": 7}')
    assert (status, body["__type"]) == (400, "SerializationException")
    status, _, body = gateway.post(b"[1, 2]")
    assert (status, body["__type"]) == (400, "SerializationException")


@pytest.mark.parametrize("target", [None, "SageMaker.CreateTrainingJob", "Other.DescribeEndpoint"])
def test_unknown_target_is_an_unknown_operation_exception(gateway: Gateway, target: str | None):
    status, headers, body = gateway.post(b"{}", target=target)
    assert (status, body["__type"]) == (400, "UnknownOperationException")
    assert headers["x-amzn-RequestId"]


def test_missing_config_and_missing_model_are_reported(sm: Any):
    response = error_of(sm.create_endpoint, EndpointName="ep", EndpointConfigName="nope")
    assert response["Error"]["Message"] == (
        f'Could not find endpoint configuration "{ARN}:endpoint-config/nope".'
    )
    response = error_of(create_config, sm=sm, name="cfg", model="ghost")
    assert response["Error"]["Message"] == f'Could not find model "{ARN}:model/ghost".'
    for call, kwargs in [
        (sm.describe_model, {"ModelName": "ghost"}),
        (sm.delete_model, {"ModelName": "ghost"}),
        (sm.describe_endpoint_config, {"EndpointConfigName": "nope"}),
        (sm.delete_endpoint_config, {"EndpointConfigName": "nope"}),
        (sm.delete_endpoint, {"EndpointName": "nope"}),
        (sm.update_endpoint, {"EndpointName": "nope", "EndpointConfigName": "nope"}),
    ]:
        assert error_of(call, **kwargs)["Error"]["Message"].startswith("Could not find ")


def test_endpoint_in_progress_cannot_be_updated_or_deleted(gateway: Gateway, sm: Any):
    gateway.deployer.gate.clear()
    create_model(sm)
    create_config(sm, "cfg")
    sm.create_endpoint(EndpointName="ep", EndpointConfigName="cfg")
    expected = f'Cannot update in-progress endpoint "{ARN}:endpoint/ep".'
    assert error_of(sm.delete_endpoint, EndpointName="ep")["Error"]["Message"] == expected
    response = error_of(sm.update_endpoint, EndpointName="ep", EndpointConfigName="cfg")
    assert response["Error"]["Message"] == expected
    gateway.deployer.gate.set()
    sm.get_waiter("endpoint_in_service").wait(EndpointName="ep", WaiterConfig=FAST)


# -- failures --------------------------------------------------------------------------


def test_failed_deployment_marks_the_endpoint_failed(gateway: Gateway, sm: Any):
    gateway.deployer.failures["cfg"] = "The primary container did not pass the ping health check."
    create_model(sm)
    create_config(sm, "cfg")
    sm.create_endpoint(EndpointName="ep", EndpointConfigName="cfg")
    with pytest.raises(WaiterError):
        sm.get_waiter("endpoint_in_service").wait(EndpointName="ep", WaiterConfig=FAST)
    described = sm.describe_endpoint(EndpointName="ep")
    assert described["EndpointStatus"] == "Failed"
    assert described["FailureReason"] == gateway.deployer.failures["cfg"]

    response = error_of(sm.update_endpoint, EndpointName="ep", EndpointConfigName="cfg")
    assert response["Error"]["Message"] == f'Cannot update failed endpoint "{ARN}:endpoint/ep".'
    sm.delete_endpoint(EndpointName="ep")
    sm.get_waiter("endpoint_deleted").wait(EndpointName="ep", WaiterConfig=FAST)


def test_failed_update_keeps_the_old_config_in_service(gateway: Gateway, sm: Any):
    deploy(sm, "ep", "good")
    create_config(sm, "bad")
    gateway.deployer.failures["bad"] = "CUDA out of memory"
    sm.update_endpoint(EndpointName="ep", EndpointConfigName="bad")
    gateway.run(gateway.control.wait_idle())
    described = sm.describe_endpoint(EndpointName="ep")
    assert described["EndpointStatus"] == "InService"
    assert described["EndpointConfigName"] == "good"
    assert described["FailureReason"] == "CUDA out of memory"
    assert described["ProductionVariants"][0]["CurrentInstanceCount"] == 1

    create_config(sm, "better")
    sm.update_endpoint(EndpointName="ep", EndpointConfigName="better")
    sm.get_waiter("endpoint_in_service").wait(EndpointName="ep", WaiterConfig=FAST)
    described = sm.describe_endpoint(EndpointName="ep")
    assert described["EndpointConfigName"] == "better"
    assert "FailureReason" not in described


# -- restart ---------------------------------------------------------------------------


def test_a_restarted_gateway_lists_and_redeploys_its_endpoints(tmp_path: Path):
    db = tmp_path / "state.db"
    with Gateway(db, FakeDeployer()) as first:
        sm = first.client()
        deploy(sm, "one")
        deploy(sm, "two")
        first.deployer.gate.clear()
        create_config(sm, "three")
        sm.create_endpoint(EndpointName="three", EndpointConfigName="three")
        before = sm.list_endpoints(SortBy="Name", SortOrder="Ascending")["Endpoints"]
    assert [e["EndpointStatus"] for e in before] == ["InService", "Creating", "InService"]

    # A config and model deleted while the endpoint runs must not stop its restore.
    second_deployer = FakeDeployer()
    second_deployer.gate.clear()
    with Gateway(db, second_deployer, restore=True) as second:
        sm = second.client()
        after = sm.list_endpoints(SortBy="Name", SortOrder="Ascending")["Endpoints"]
        assert [e["EndpointName"] for e in after] == ["one", "three", "two"]
        assert [e["EndpointStatus"] for e in after] == [
            "SystemUpdating",
            "Creating",
            "SystemUpdating",
        ]
        sm.delete_endpoint_config(EndpointConfigName="one")
        second_deployer.gate.set()
        for name in ("one", "two", "three"):
            sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig=FAST)
        assert sorted(call[1] for call in second_deployer.calls) == ["one", "three", "two"]
        assert (
            sm.describe_endpoint(EndpointName="one")["ProductionVariants"][0][
                "CurrentInstanceCount"
            ]
            == 1
        )


def test_restore_finishes_an_interrupted_delete(tmp_path: Path):
    db = tmp_path / "state.db"
    deployer = FakeDeployer()
    with Gateway(db, deployer) as first:
        deploy(first.client(), "ep")
    store = Store.open(sqlite_url(db))
    store.update_endpoint("ep", status="Deleting")
    store.close()
    with Gateway(db, FakeDeployer(), restore=True) as second:
        sm = second.client()
        sm.get_waiter("endpoint_deleted").wait(EndpointName="ep", WaiterConfig=FAST)
        assert second.deployer.calls == [("undeploy", "ep", None)]


# -- the ControlPlane API directly -----------------------------------------------------


async def test_every_output_matches_the_service_models_output_shape(tmp_path: Path):
    store = Store.open(sqlite_url(tmp_path / "state.db"))
    deployer = FakeDeployer()
    control = ControlPlane(store, deployer)
    model = sagemaker_model()

    async def call(operation: str, **params: Any) -> dict:
        out = await control.handle(operation, params)
        shape = model.operation_model(operation).output_shape
        if shape is None:
            assert out == {}
        else:
            validate_shape(shape, out)
        return out

    container = {"Image": IMAGE, "ModelDataUrl": "s3://b/m.tar.gz", "Environment": {"A": "1"}}
    await call("CreateModel", ModelName="m", PrimaryContainer=container, ExecutionRoleArn=ROLE)
    variant = {
        "VariantName": "AllTraffic",
        "ModelName": "m",
        "InstanceType": "ml.g5.2xlarge",
        "InitialInstanceCount": 1,
    }
    for name in ("c1", "c2"):
        await call("CreateEndpointConfig", EndpointConfigName=name, ProductionVariants=[variant])
    await call("CreateEndpoint", EndpointName="e", EndpointConfigName="c1")
    await call("DescribeEndpoint", EndpointName="e")
    await control.wait_idle()
    deployer.gate.clear()
    await call("UpdateEndpoint", EndpointName="e", EndpointConfigName="c2")
    updating = await call("DescribeEndpoint", EndpointName="e")
    assert updating["PendingDeploymentSummary"]["EndpointConfigName"] == "c2"
    deployer.gate.set()
    await control.wait_idle()
    await call("DescribeEndpoint", EndpointName="e")
    await call("DescribeModel", ModelName="m")
    await call("DescribeEndpointConfig", EndpointConfigName="c1")
    await call("ListModels")
    await call("ListEndpointConfigs", MaxResults=1)
    await call("ListEndpoints", MaxResults=1)
    await call("AddTags", ResourceArn=f"{ARN}:model/m", Tags=[{"Key": "k", "Value": "v"}])
    await call("ListTags", ResourceArn=f"{ARN}:model/m")
    await call("DeleteTags", ResourceArn=f"{ARN}:model/m", TagKeys=["k"])
    await call("DeleteEndpoint", EndpointName="e")
    await control.wait_idle()
    await call("DeleteEndpointConfig", EndpointConfigName="c1")
    await call("DeleteModel", ModelName="m")
    await control.close()
    store.close()


async def test_handle_rejects_operations_it_does_not_implement(tmp_path: Path):
    control = ControlPlane(Store.open("sqlite://"), FakeDeployer())
    with pytest.raises(AwsError) as info:
        await control.handle("CreateTrainingJob", {})
    assert info.value.code == "UnknownOperationException"
    assert "DescribeEndpoint" in OPERATIONS


def test_fake_deployer_satisfies_the_protocol():
    assert isinstance(FakeDeployer(), EndpointDeployer)


class CrashingDeployer(FakeDeployer):
    async def deploy(
        self, endpoint_name: str, config: dict[str, Any], models: dict[str, dict]
    ) -> None:
        raise RuntimeError("provisioner bug")


async def setup_endpoint(control: ControlPlane, name: str = "e", config: str = "c1") -> None:
    container = {"Image": IMAGE}
    await control.handle("CreateModel", {"ModelName": "m", "PrimaryContainer": container})
    for config_name in ("c1", "c2"):
        variant = {"VariantName": "AllTraffic", "ModelName": "m", "InitialInstanceCount": 1}
        await control.handle(
            "CreateEndpointConfig",
            {"EndpointConfigName": config_name, "ProductionVariants": [variant]},
        )
    await control.handle("CreateEndpoint", {"EndpointName": name, "EndpointConfigName": config})
    await control.wait_idle()


async def test_a_deployer_crash_marks_the_endpoint_failed():
    store = Store.open("sqlite://")
    control = ControlPlane(store, CrashingDeployer())
    await setup_endpoint(control)
    described = await control.handle("DescribeEndpoint", {"EndpointName": "e"})
    assert described["EndpointStatus"] == "Failed"
    assert described["FailureReason"] == (
        "Internal error while deploying: RuntimeError: provisioner bug"
    )
    await control.close()
    store.close()


async def test_restore_resumes_an_interrupted_update(tmp_path: Path):
    store = Store.open(sqlite_url(tmp_path / "state.db"))
    first = FakeDeployer()
    control = ControlPlane(store, first)
    await setup_endpoint(control)
    first.gate.clear()
    await control.handle("UpdateEndpoint", {"EndpointName": "e", "EndpointConfigName": "c2"})
    await control.close()  # the gateway stops mid-update

    second = FakeDeployer()
    restarted = ControlPlane(store, second)
    assert await restarted.restore() == ["e"]
    await restarted.wait_idle()
    described = await restarted.handle("DescribeEndpoint", {"EndpointName": "e"})
    assert (described["EndpointStatus"], described["EndpointConfigName"]) == ("InService", "c2")
    assert second.calls == [("deploy", "e", "c2")]
    await restarted.close()
    store.close()
