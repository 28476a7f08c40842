"""The SageMaker control plane: models, endpoint configs, endpoints and tags.

`ControlPlane.handle(operation, params)` takes an operation name and its decoded JSON
input, validates it against botocore's service model, and returns the output shape as a
JSON-ready dict (timestamps as epoch seconds) or raises `AwsError`. Endpoint changes are
recorded at once and carried out by an `EndpointDeployer` in background tasks, so
CreateEndpoint answers `Creating` immediately, as SageMaker does.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from botocore.model import ServiceModel

from . import errors
from .errors import AwsError
from .lifecycle import DeployFailed, EndpointDeployer
from .lifecycle import EndpointStatus as Status
from .store import (
    AlreadyExists,
    EndpointConfigRecord,
    EndpointRecord,
    ListQuery,
    ModelRecord,
    Store,
)
from .validation import sagemaker_model, validate_input

__all__ = ["OPERATIONS", "ControlPlane"]

log = logging.getLogger(__name__)

# Statuses from which SageMaker accepts DeleteEndpoint / UpdateEndpoint.
_DELETABLE = (
    Status.IN_SERVICE,
    Status.FAILED,
    Status.OUT_OF_SERVICE,
    Status.UPDATE_ROLLBACK_FAILED,
)
_UPDATABLE = (Status.IN_SERVICE,)
# Endpoints whose instances a restarted gateway must bring back (or finish deleting).
_RESTORABLE = (
    Status.IN_SERVICE,
    Status.SYSTEM_UPDATING,
    Status.CREATING,
    Status.UPDATING,
    Status.DELETING,
)
_MAX_FAILURE_REASON = 1024
_DEFAULT_PAGE = 10

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]

# Operation name -> ControlPlane method; every method takes the validated input.
_HANDLERS = {
    "CreateModel": "create_model",
    "DescribeModel": "describe_model",
    "ListModels": "list_models",
    "DeleteModel": "delete_model",
    "CreateEndpointConfig": "create_endpoint_config",
    "DescribeEndpointConfig": "describe_endpoint_config",
    "ListEndpointConfigs": "list_endpoint_configs",
    "DeleteEndpointConfig": "delete_endpoint_config",
    "CreateEndpoint": "create_endpoint",
    "DescribeEndpoint": "describe_endpoint",
    "ListEndpoints": "list_endpoints",
    "UpdateEndpoint": "update_endpoint",
    "UpdateEndpointWeightsAndCapacities": "update_endpoint_weights_and_capacities",
    "DeleteEndpoint": "delete_endpoint",
    "AddTags": "add_tags",
    "ListTags": "list_tags",
    "DeleteTags": "delete_tags",
}
OPERATIONS = frozenset(_HANDLERS)
"""The SageMaker operations the control plane implements."""


def _now() -> float:
    # Milliseconds, like SageMaker's own timestamps.
    return round(time.time(), 3)


class ControlPlane:
    """SageMaker's hosting control plane over a `Store` and an `EndpointDeployer`."""

    def __init__(
        self,
        store: Store,
        deployer: EndpointDeployer,
        region: str = "us-east-1",
        account: str = "123456789012",
        *,
        service_model: ServiceModel | None = None,
        model_check: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        """`model_check`, if given, vets each CreateModel input (raising `AwsError`), so a
        model the deployer could never run is refused at once, not at deploy time."""
        self.store = store
        self.deployer = deployer
        self.model_check = model_check
        self.region = region
        self.account = account
        self._model = service_model or sagemaker_model()
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def handle(self, operation: str, params: Any) -> dict[str, Any]:
        """Run one operation on its decoded JSON input; its output, or `AwsError`."""
        method = _HANDLERS.get(operation)
        if method is None:
            raise errors.unknown_operation(operation)
        request = validate_input(operation, params, self._model)
        handler: Handler = getattr(self, method)
        return await handler(request)

    def arn(self, kind: str, name: str) -> str:
        """The ARN of a resource (`model`, `endpoint-config`, `endpoint`); names lower-cased."""
        return f"arn:aws:sagemaker:{self.region}:{self.account}:{kind}/{name.lower()}"

    # -- lifecycle of the control plane itself --------------------------------------------

    async def restore(self, first: str | None = None) -> list[str]:
        """Bring back, in the background, every endpoint a previous gateway left running.

        InService endpoints are redeployed (reported as SystemUpdating meanwhile);
        Creating and Updating ones resume; Deleting ones finish. Endpoint ``first``, when
        there is one to restore, comes back before the others: their work starts once its
        own has ended, so that they do not compete with it for the machine. Returns their
        names.
        """
        records = await self._db(self.store.endpoints_with_status, _RESTORABLE)
        key = first.lower() if first else None
        records.sort(key=lambda record: record.name.lower() != key)  # stable: `first` first
        restored: list[str] = []
        gate: asyncio.Task[None] | None = None

        def start(name: str, work: Coroutine[Any, Any, None]) -> None:
            self._start(name, work if gate is None else _after(gate, work))

        for record in records:
            if record.name.lower() in self._tasks:
                continue
            if record.status == Status.DELETING:
                start(record.name, self._run_delete(record.name))
            elif record.status == Status.CREATING:
                start(record.name, self._run_create(record.name))
            elif record.status == Status.UPDATING:
                start(record.name, self._run_restore_update(record.name))
            else:
                moved = await self._db(
                    functools.partial(
                        self.store.update_endpoint,
                        record.name,
                        expect=(Status.IN_SERVICE, Status.SYSTEM_UPDATING),
                        status=Status.SYSTEM_UPDATING,
                    )
                )
                if moved is None:
                    continue
                start(record.name, self._run_restore(record.name))
            restored.append(record.name)
            if record.name.lower() == key:
                gate = self._tasks[key]
        return restored

    async def wait_idle(self) -> None:
        """Wait until no deployment or deletion is in progress."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def close(self) -> None:
        """Cancel background work; the store keeps each endpoint's state for `restore`.

        The store is the caller's to close.
        """
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    # -- models ------------------------------------------------------------------------

    async def create_model(self, request: dict[str, Any]) -> dict[str, Any]:
        """CreateModel."""
        name = request["ModelName"]
        arn = self.arn("model", name)
        if "PrimaryContainer" not in request and "Containers" not in request:
            raise errors.validation_error(
                f'Either PrimaryContainer or Containers must be specified for model "{arn}".'
            )
        if self.model_check is not None:
            self.model_check(request)
        spec = {key: value for key, value in request.items() if key != "Tags"}
        record = ModelRecord(name, arn, spec, _now())
        try:
            await self._db(self.store.create_model, record, _tags(request))
        except AlreadyExists:
            raise errors.model_exists(arn) from None
        return {"ModelArn": arn}

    async def describe_model(self, request: dict[str, Any]) -> dict[str, Any]:
        """DescribeModel."""
        model = await self._get_model(request["ModelName"])
        return self._model_description(model)

    async def list_models(self, request: dict[str, Any]) -> dict[str, Any]:
        """ListModels."""
        records, token = await self._list(self.store.list_models, request)
        models = [
            {"ModelName": m.name, "ModelArn": m.arn, "CreationTime": m.created_at} for m in records
        ]
        return _with_token({"Models": models}, token)

    async def delete_model(self, request: dict[str, Any]) -> dict[str, Any]:
        """DeleteModel (allowed while an endpoint config or endpoint uses the model)."""
        name = request["ModelName"]
        if not await self._db(self.store.delete_model, name):
            raise errors.model_not_found(self.arn("model", name))
        return {}

    # -- endpoint configs --------------------------------------------------------------

    async def create_endpoint_config(self, request: dict[str, Any]) -> dict[str, Any]:
        """CreateEndpointConfig; every variant's model must exist."""
        name = request["EndpointConfigName"]
        arn = self.arn("endpoint-config", name)
        variants = []
        seen: set[str] = set()
        for variant in request["ProductionVariants"]:
            key = variant["VariantName"].lower()
            if key in seen:
                raise errors.validation_error(
                    f'Variant name "{variant["VariantName"]}" is used more than once in '
                    f'endpoint configuration "{arn}".'
                )
            seen.add(key)
            variants.append({"InitialVariantWeight": 1.0, **variant})
        wanted = {v["ModelName"] for v in variants if "ModelName" in v}
        found = await self._db(self.store.get_models, wanted)
        missing = sorted(wanted - set(found))
        if missing:
            raise errors.model_not_found(self.arn("model", missing[0]))
        spec = {key: value for key, value in request.items() if key != "Tags"}
        spec["ProductionVariants"] = variants
        record = EndpointConfigRecord(name, arn, spec, _now())
        try:
            await self._db(self.store.create_endpoint_config, record, _tags(request))
        except AlreadyExists:
            raise errors.endpoint_config_exists(arn) from None
        return {"EndpointConfigArn": arn}

    async def describe_endpoint_config(self, request: dict[str, Any]) -> dict[str, Any]:
        """DescribeEndpointConfig."""
        config = await self._get_endpoint_config(request["EndpointConfigName"])
        return self._config_description(config)

    async def list_endpoint_configs(self, request: dict[str, Any]) -> dict[str, Any]:
        """ListEndpointConfigs."""
        records, token = await self._list(self.store.list_endpoint_configs, request)
        configs = [
            {"EndpointConfigName": c.name, "EndpointConfigArn": c.arn, "CreationTime": c.created_at}
            for c in records
        ]
        return _with_token({"EndpointConfigs": configs}, token)

    async def delete_endpoint_config(self, request: dict[str, Any]) -> dict[str, Any]:
        """DeleteEndpointConfig (allowed while an endpoint uses it, as SageMaker allows)."""
        name = request["EndpointConfigName"]
        if not await self._db(self.store.delete_endpoint_config, name):
            raise errors.endpoint_config_not_found(self.arn("endpoint-config", name))
        return {}

    # -- endpoints ---------------------------------------------------------------------

    async def create_endpoint(self, request: dict[str, Any]) -> dict[str, Any]:
        """CreateEndpoint: record it as Creating and deploy in the background."""
        name = request["EndpointName"]
        arn = self.arn("endpoint", name)
        config = await self._get_endpoint_config(request["EndpointConfigName"])
        snapshot = await self._snapshot(config)
        now = _now()
        record = EndpointRecord(
            name=name,
            arn=arn,
            config_name=config.name,
            status=Status.CREATING,
            created_at=now,
            modified_at=now,
            pending_config_name=config.name,
            pending=snapshot,
            pending_since=now,
            deployment_config=request.get("DeploymentConfig"),
        )
        try:
            await self._db(self.store.create_endpoint, record, _tags(request))
        except AlreadyExists:
            raise errors.endpoint_exists(arn) from None
        self._start(name, self._run_create(name))
        return {"EndpointArn": arn}

    async def describe_endpoint(self, request: dict[str, Any]) -> dict[str, Any]:
        """DescribeEndpoint, with live instance counts from the deployer."""
        endpoint = await self._get_endpoint(request["EndpointName"])
        return self._endpoint_description(endpoint)

    async def list_endpoints(self, request: dict[str, Any]) -> dict[str, Any]:
        """ListEndpoints."""
        records, token = await self._list(self.store.list_endpoints, request)
        endpoints = [
            {
                "EndpointName": e.name,
                "EndpointArn": e.arn,
                "CreationTime": e.created_at,
                "LastModifiedTime": e.modified_at,
                "EndpointStatus": e.status,
            }
            for e in records
        ]
        return _with_token({"Endpoints": endpoints}, token)

    async def update_endpoint(self, request: dict[str, Any]) -> dict[str, Any]:
        """UpdateEndpoint: Updating now, the new config deployed blue/green in the background."""
        name = request["EndpointName"]
        endpoint = await self._get_endpoint(name)
        config = await self._get_endpoint_config(request["EndpointConfigName"])
        snapshot = await self._snapshot(config)
        now = _now()
        changes: dict[str, Any] = {
            "status": Status.UPDATING,
            "modified_at": now,
            "pending_config_name": config.name,
            "pending": snapshot,
            "pending_since": now,
        }
        if not request.get("RetainDeploymentConfig", False):
            changes["deployment_config"] = request.get("DeploymentConfig")
        moved = await self._db(
            functools.partial(self.store.update_endpoint, name, expect=_UPDATABLE, **changes)
        )
        if moved is None:
            raise await self._transition_refused(name, endpoint.arn)
        self._start(name, self._run_update(name))
        return {"EndpointArn": moved.arn}

    async def update_endpoint_weights_and_capacities(
        self, request: dict[str, Any]
    ) -> dict[str, Any]:
        """UpdateEndpointWeightsAndCapacities: Updating now, then the running fleet moves to
        the new weights and instance counts (no new fleet: added instances take traffic once
        healthy, removed ones are drained first). The desired values are stored with the
        deployment at once, so DescribeEndpoint reports them and a restarted gateway
        restores them; UpdateEndpoint's new config replaces them."""
        name = request["EndpointName"]
        endpoint = await self._get_endpoint(name)
        if endpoint.status != Status.IN_SERVICE or endpoint.deployment is None:
            raise await self._transition_refused(name, endpoint.arn)
        snapshot = copy.deepcopy(endpoint.deployment)
        variants = {v["VariantName"]: v for v in snapshot["config"]["ProductionVariants"]}
        desired: dict[str, tuple[float | None, int | None]] = {}
        for entry in request["DesiredWeightsAndCapacities"]:
            variant = variants.get(entry["VariantName"])
            if variant is None:
                raise errors.validation_error(
                    f"The variant name(s) [{entry['VariantName']}] is/are not present in "
                    f'the endpoint "{endpoint.arn}".'
                )
            weight, count = entry.get("DesiredWeight"), entry.get("DesiredInstanceCount")
            if weight is None and count is None and "ServerlessUpdateConfig" not in entry:
                raise errors.validation_error(
                    f"Variant {entry['VariantName']}: give DesiredWeight, "
                    "DesiredInstanceCount or both."
                )
            if count == 0:
                raise errors.validation_error(
                    f"Variant {entry['VariantName']}: DesiredInstanceCount 0 needs inference "
                    "components, which streamhost does not run; give 1 or more."
                )
            if count is not None and variant.get("ServerlessConfig") is not None:
                raise errors.validation_error(
                    f"Variant {entry['VariantName']} is serverless: it has no instance count."
                )
            if weight is not None:
                variant["DesiredWeight"] = weight
            if count is not None:
                variant["DesiredInstanceCount"] = count
            desired[entry["VariantName"]] = (weight, count)
        moved = await self._db(
            functools.partial(
                self.store.update_endpoint,
                name,
                expect=_UPDATABLE,
                status=Status.UPDATING,
                modified_at=_now(),
                failure_reason=None,
                deployment=snapshot,
            )
        )
        if moved is None:
            raise await self._transition_refused(name, endpoint.arn)
        self._start(name, self._run_scale(name, desired, endpoint.deployment))
        return {"EndpointArn": moved.arn}

    async def delete_endpoint(self, request: dict[str, Any]) -> dict[str, Any]:
        """DeleteEndpoint: Deleting now, undeployed and removed in the background."""
        name = request["EndpointName"]
        endpoint = await self._get_endpoint(name)
        moved = await self._db(
            functools.partial(
                self.store.update_endpoint,
                name,
                expect=_DELETABLE,
                status=Status.DELETING,
                modified_at=_now(),
            )
        )
        if moved is None:
            raise await self._transition_refused(name, endpoint.arn)
        self._start(name, self._run_delete(name))
        return {}

    # -- tags --------------------------------------------------------------------------

    async def add_tags(self, request: dict[str, Any]) -> dict[str, Any]:
        """AddTags: set tags on a model, endpoint config or endpoint."""
        arn = await self._resource_arn(request["ResourceArn"])
        tags = _tags(request) or {}
        existing = dict(await self._db(self.store.get_tags, arn))
        if len(existing | tags) > 50:
            raise errors.resource_limit_exceeded(f'Resource "{arn}" can have at most 50 tags.')
        await self._db(self.store.add_tags, arn, tags)
        return {"Tags": request["Tags"]}

    async def list_tags(self, request: dict[str, Any]) -> dict[str, Any]:
        """ListTags."""
        arn = await self._resource_arn(request["ResourceArn"])
        tags = await self._db(self.store.get_tags, arn)
        start = _decode_offset(request.get("NextToken"))
        limit = request.get("MaxResults", 50)
        page = [{"Key": k, "Value": v} for k, v in tags[start : start + limit]]
        more = start + limit < len(tags)
        return _with_token({"Tags": page}, _encode_token([start + limit]) if more else None)

    async def delete_tags(self, request: dict[str, Any]) -> dict[str, Any]:
        """DeleteTags."""
        arn = await self._resource_arn(request["ResourceArn"])
        await self._db(self.store.delete_tags, arn, request["TagKeys"])
        return {}

    # -- background work ---------------------------------------------------------------

    def _start(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        key = name.lower()
        task = asyncio.create_task(work, name=f"endpoint:{key}")
        self._tasks[key] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self._tasks.get(key) is done:
                del self._tasks[key]
            if not done.cancelled() and done.exception() is not None:
                # Deploy faults are recorded on the endpoint; this is the store failing.
                log.error("background work on endpoint %s failed", key, exc_info=done.exception())

        task.add_done_callback(forget)

    async def _deploy(self, endpoint_name: str, snapshot: dict[str, Any] | None) -> str | None:
        """Run one deployment; the failure reason, or None on success."""
        if snapshot is None:
            return "No deployment is recorded for this endpoint."
        try:
            await self.deployer.deploy(endpoint_name, snapshot["config"], snapshot["models"])
        except DeployFailed as failure:
            return failure.reason[:_MAX_FAILURE_REASON] or "Deployment failed."
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("deploying endpoint %s failed", endpoint_name)
            return f"Internal error while deploying: {type(exc).__name__}: {exc}"[
                :_MAX_FAILURE_REASON
            ]
        return None

    async def _run_create(self, name: str) -> None:
        endpoint = await self._db(self.store.get_endpoint, name)
        if endpoint is None:
            return
        failure = await self._deploy(endpoint.name, endpoint.pending)
        if failure is None:
            await self._record_deployed(endpoint, expect=(Status.CREATING,))
        else:
            await self._record(
                name, (Status.CREATING,), status=Status.FAILED, failure_reason=failure
            )

    async def _run_update(self, name: str) -> None:
        endpoint = await self._db(self.store.get_endpoint, name)
        if endpoint is None:
            return
        failure = await self._deploy(endpoint.name, endpoint.pending)
        if failure is None:
            await self._record_deployed(endpoint, expect=(Status.UPDATING,))
        else:
            # SageMaker rolls a failed update back: the old fleet keeps serving, the
            # endpoint is InService on its old config, and FailureReason says why.
            await self._record(
                name,
                (Status.UPDATING,),
                status=Status.IN_SERVICE,
                failure_reason=failure,
                pending_config_name=None,
                pending=None,
                pending_since=None,
            )

    async def _run_scale(
        self,
        name: str,
        desired: dict[str, tuple[float | None, int | None]],
        before: dict[str, Any],
    ) -> None:
        try:
            await self.deployer.scale(name, desired)
            failure = None
        except DeployFailed as error:
            failure = error.reason
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("scaling endpoint %s failed", name)
            failure = f"Internal error while scaling: {type(exc).__name__}: {exc}"
        if failure is None:
            await self._record(name, (Status.UPDATING,), status=Status.IN_SERVICE)
            return
        # As a failed update: the fleet keeps serving, with the values it had.
        await self._record(
            name,
            (Status.UPDATING,),
            status=Status.IN_SERVICE,
            failure_reason=failure[:_MAX_FAILURE_REASON],
            deployment=before,
        )

    async def _run_restore(self, name: str) -> None:
        endpoint = await self._db(self.store.get_endpoint, name)
        if endpoint is None:
            return
        failure = await self._deploy(endpoint.name, endpoint.deployment)
        if failure is None:
            await self._record(name, (Status.SYSTEM_UPDATING,), status=Status.IN_SERVICE)
        else:
            await self._record(
                name, (Status.SYSTEM_UPDATING,), status=Status.FAILED, failure_reason=failure
            )

    async def _run_restore_update(self, name: str) -> None:
        # The gateway stopped mid-update, so neither fleet is running: finish the update,
        # or fall back to the old config as a failed update would.
        endpoint = await self._db(self.store.get_endpoint, name)
        if endpoint is None:
            return
        if endpoint.pending is None:
            # A capacity change (UpdateEndpointWeightsAndCapacities): its values are in the
            # deployment, which comes back with them.
            failure = await self._deploy(endpoint.name, endpoint.deployment)
            await self._record(
                name,
                (Status.UPDATING,),
                status=Status.IN_SERVICE if failure is None else Status.FAILED,
                failure_reason=failure,
            )
            return
        failure = await self._deploy(endpoint.name, endpoint.pending)
        if failure is None:
            await self._record_deployed(endpoint, expect=(Status.UPDATING,))
            return
        rollback_failure = await self._deploy(endpoint.name, endpoint.deployment)
        status = Status.IN_SERVICE if rollback_failure is None else Status.UPDATE_ROLLBACK_FAILED
        await self._record(
            name,
            (Status.UPDATING,),
            status=status,
            failure_reason=failure,
            pending_config_name=None,
            pending=None,
            pending_since=None,
        )

    async def _run_delete(self, name: str) -> None:
        endpoint = await self._db(self.store.get_endpoint, name)
        if endpoint is None:
            return
        try:
            await self.deployer.undeploy(endpoint.name)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The record goes regardless: a client waiting on EndpointDeleted must not
            # hang on a provisioner fault, which the log reports.
            log.exception("undeploying endpoint %s failed", endpoint.name)
        await self._db(self.store.delete_endpoint, name)

    async def _record_deployed(self, endpoint: EndpointRecord, expect: tuple[str, ...]) -> None:
        now = _now()
        await self._record(
            endpoint.name,
            expect,
            status=Status.IN_SERVICE,
            failure_reason=None,
            config_name=endpoint.pending_config_name or endpoint.config_name,
            deployed_config_name=endpoint.pending_config_name,
            deployment=endpoint.pending,
            deployed_at=now,
            pending_config_name=None,
            pending=None,
            pending_since=None,
        )

    async def _record(self, name: str, expect: tuple[str, ...], **changes: Any) -> None:
        changes.setdefault("modified_at", _now())
        updated = await self._db(
            functools.partial(self.store.update_endpoint, name, expect=expect, **changes)
        )
        if updated is None:
            log.warning("endpoint %s left %s before its deployment finished", name, expect)

    # -- helpers -----------------------------------------------------------------------

    async def _db(self, call: Callable[..., Any], *args: Any) -> Any:
        # Off the event loop: SQLite commits fsync, and other databases are remote.
        return await asyncio.to_thread(call, *args)

    async def _get_model(self, name: str) -> ModelRecord:
        model = await self._db(self.store.get_model, name)
        if model is None:
            raise errors.model_not_found(self.arn("model", name))
        return model

    async def _get_endpoint_config(self, name: str) -> EndpointConfigRecord:
        config = await self._db(self.store.get_endpoint_config, name)
        if config is None:
            raise errors.endpoint_config_not_found(self.arn("endpoint-config", name))
        return config

    async def _get_endpoint(self, name: str) -> EndpointRecord:
        endpoint = await self._db(self.store.get_endpoint, name)
        if endpoint is None:
            raise errors.endpoint_not_found(self.arn("endpoint", name))
        return endpoint

    async def _transition_refused(self, name: str, arn: str) -> AwsError:
        endpoint = await self._db(self.store.get_endpoint, name)
        if endpoint is None:
            return errors.endpoint_not_found(arn)
        if endpoint.status == Status.FAILED:
            return errors.endpoint_failed(arn)
        return errors.endpoint_in_progress(arn)

    async def _snapshot(self, config: EndpointConfigRecord) -> dict[str, Any]:
        """The config and the models it names, as the deployer will receive them."""
        wanted = {v["ModelName"] for v in config.spec["ProductionVariants"] if "ModelName" in v}
        found = await self._db(self.store.get_models, wanted)
        missing = sorted(wanted - set(found))
        if missing:
            raise errors.model_not_found(self.arn("model", missing[0]))
        return {
            "config": self._config_description(config),
            "models": {name: self._model_description(model) for name, model in found.items()},
        }

    async def _list(
        self, lister: Callable[[ListQuery], Any], request: dict[str, Any]
    ) -> tuple[list[Any], str | None]:
        sort_by = request.get("SortBy", "CreationTime")
        descending = request.get("SortOrder", "Descending") == "Descending"
        after = None
        if "NextToken" in request:
            token = _decode_token(request["NextToken"])
            value_type = (int, float) if sort_by == "CreationTime" else str
            if (
                len(token) != 4
                or token[:2] != [sort_by, descending]
                or isinstance(token[2], bool)
                or not isinstance(token[2], value_type)
                or not isinstance(token[3], str)
            ):
                raise errors.invalid_pagination_token()
            after = (token[2], token[3])
        query = ListQuery(
            sort_by=sort_by,
            descending=descending,
            limit=request.get("MaxResults", _DEFAULT_PAGE),
            after=after,
            name_contains=request.get("NameContains"),
            created_before=request.get("CreationTimeBefore"),
            created_after=request.get("CreationTimeAfter"),
            modified_before=request.get("LastModifiedTimeBefore"),
            modified_after=request.get("LastModifiedTimeAfter"),
            status=request.get("StatusEquals"),
        )
        records, cursor = await self._db(lister, query)
        token = None if cursor is None else _encode_token([sort_by, descending, *cursor])
        return records, token

    async def _resource_arn(self, arn: str) -> str:
        """The stored ARN of the tagged resource `arn` names; not-found if it has none."""
        prefix = f"arn:aws:sagemaker:{self.region}:{self.account}:"
        kind, _, name = (
            arn[len(prefix) :].partition("/") if arn.startswith(prefix) else ("", "", "")
        )
        getters = {
            "model": (self.store.get_model, errors.model_not_found),
            "endpoint-config": (self.store.get_endpoint_config, errors.endpoint_config_not_found),
            "endpoint": (self.store.get_endpoint, errors.endpoint_not_found),
        }
        if kind not in getters or not name:
            raise errors.validation_error(f'Could not find resource "{arn}".')
        getter, not_found = getters[kind]
        record = await self._db(getter, name)
        if record is None:
            raise not_found(arn)
        return record.arn

    # -- output shapes -----------------------------------------------------------------

    def _members(self, shape: str) -> frozenset[str]:
        return _members(self._model, shape)

    def _model_description(self, model: ModelRecord) -> dict[str, Any]:
        members = self._members("DescribeModelOutput")
        out = {key: value for key, value in model.spec.items() if key in members}
        out.update(ModelName=model.name, ModelArn=model.arn, CreationTime=model.created_at)
        out.setdefault("EnableNetworkIsolation", False)
        return out

    def _config_description(self, config: EndpointConfigRecord) -> dict[str, Any]:
        members = self._members("DescribeEndpointConfigOutput")
        out = {key: value for key, value in config.spec.items() if key in members}
        out.update(
            EndpointConfigName=config.name,
            EndpointConfigArn=config.arn,
            CreationTime=config.created_at,
        )
        return out

    def _endpoint_description(self, endpoint: EndpointRecord) -> dict[str, Any]:
        out: dict[str, Any] = {
            "EndpointName": endpoint.name,
            "EndpointArn": endpoint.arn,
            "EndpointConfigName": endpoint.config_name,
            "EndpointStatus": endpoint.status,
            "CreationTime": endpoint.created_at,
            "LastModifiedTime": endpoint.modified_at,
        }
        if endpoint.failure_reason:
            out["FailureReason"] = endpoint.failure_reason
        try:
            counts = dict(self.deployer.instance_counts(endpoint.name))
        except Exception:
            log.exception("instance_counts(%s) failed", endpoint.name)
            counts = {}
        if endpoint.deployment is not None:
            out["ProductionVariants"] = _variant_summaries(
                endpoint.deployment, counts, endpoint.deployed_at
            )
        elif endpoint.status == Status.CREATING and endpoint.pending is not None:
            out["ProductionVariants"] = _variant_summaries(
                endpoint.pending, counts, None, (Status.CREATING, endpoint.pending_since)
            )
        if endpoint.status == Status.UPDATING and endpoint.pending is not None:
            out["PendingDeploymentSummary"] = {
                "EndpointConfigName": endpoint.pending_config_name,
                "ProductionVariants": _variant_summaries(
                    endpoint.pending,
                    {},
                    None,
                    (Status.CREATING, endpoint.pending_since),
                    pending=True,
                ),
                "StartTime": endpoint.pending_since,
            }
        if endpoint.deployment_config:
            out["LastDeploymentConfig"] = endpoint.deployment_config
        return out


@functools.lru_cache(maxsize=64)
def _members(model: ServiceModel, shape: str) -> frozenset[str]:
    return frozenset(model.shape_for(shape).members)


def _variant_summaries(
    snapshot: dict[str, Any],
    counts: dict[str, int],
    resolved_at: float | None,
    status: tuple[str, float | None] | None = None,
    *,
    pending: bool = False,
) -> list[dict[str, Any]]:
    """ProductionVariantSummary (or PendingProductionVariantSummary) for each variant."""
    summaries = []
    for variant in snapshot["config"]["ProductionVariants"]:
        name = variant["VariantName"]
        summary: dict[str, Any] = {"VariantName": name}
        model = snapshot["models"].get(variant.get("ModelName"), {})
        containers = model.get("Containers") or [model.get("PrimaryContainer") or {}]
        images = []
        for container in containers:
            if "Image" in container:
                image = {"SpecifiedImage": container["Image"], "ResolvedImage": container["Image"]}
                if resolved_at is not None:
                    image["ResolutionTime"] = resolved_at
                images.append(image)
        if images:
            summary["DeployedImages"] = images
        # UpdateEndpointWeightsAndCapacities' values, once given, else the config's.
        weight = variant.get("DesiredWeight", variant.get("InitialVariantWeight", 1.0))
        summary["DesiredWeight"] = weight
        serverless = variant.get("ServerlessConfig")
        if serverless is not None:
            summary["DesiredServerlessConfig"] = serverless
        else:
            summary["DesiredInstanceCount"] = variant.get(
                "DesiredInstanceCount", variant.get("InitialInstanceCount", 1)
            )
        if not pending:
            summary["CurrentWeight"] = weight
            if serverless is not None:
                summary["CurrentServerlessConfig"] = serverless
            else:
                summary["CurrentInstanceCount"] = counts.get(name, 0)
        else:
            for key in ("InstanceType", "AcceleratorType"):
                if key in variant:
                    summary[key] = variant[key]
        for key in ("ManagedInstanceScaling", "RoutingConfig"):
            if key in variant:
                summary[key] = variant[key]
        if status is not None:
            state, since = status
            summary["VariantStatus"] = [
                {"Status": state} if since is None else {"Status": state, "StartTime": since}
            ]
        summaries.append(summary)
    return summaries


def _tags(request: dict[str, Any]) -> dict[str, str] | None:
    tags = request.get("Tags")
    return None if tags is None else {tag["Key"]: tag["Value"] for tag in tags}


def _with_token(out: dict[str, Any], token: str | None) -> dict[str, Any]:
    if token is not None:
        out["NextToken"] = token
    return out


def _encode_token(parts: list[Any]) -> str:
    raw = json.dumps(parts, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str) -> list[Any]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        parts = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        raise errors.invalid_pagination_token() from None
    if not isinstance(parts, list):
        raise errors.invalid_pagination_token()
    return parts


def _decode_offset(token: str | None) -> int:
    if token is None:
        return 0
    parts = _decode_token(token)
    if len(parts) != 1 or type(parts[0]) is not int or parts[0] < 0:
        raise errors.invalid_pagination_token()
    return parts[0]


async def _after(gate: asyncio.Task[None], work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` once ``gate`` has ended, however it ended."""
    try:
        await asyncio.wait({gate})
    except BaseException:
        work.close()  # never started: no "never awaited" warning
        raise
    await work
