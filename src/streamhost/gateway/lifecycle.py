"""The endpoint lifecycle contract between the control plane and whatever runs models.

The control plane owns endpoint *state* (Creating → InService, Updating, Deleting, Failed);
an `EndpointDeployer` (the local-process provisioner, a Ray provisioner, a test double)
owns the *instances*. The control plane calls it from background tasks and records the
outcome, so a deployer only has to start, replace and stop fleets.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Protocol, runtime_checkable

__all__ = ["DeployFailed", "EndpointDeployer", "EndpointStatus"]


class EndpointStatus:
    """SageMaker's `EndpointStatus` values, as stored and reported."""

    OUT_OF_SERVICE = "OutOfService"
    CREATING = "Creating"
    UPDATING = "Updating"
    SYSTEM_UPDATING = "SystemUpdating"
    ROLLING_BACK = "RollingBack"
    IN_SERVICE = "InService"
    DELETING = "Deleting"
    FAILED = "Failed"
    UPDATE_ROLLBACK_FAILED = "UpdateRollbackFailed"


class DeployFailed(Exception):
    """A deployment could not be brought up; `reason` becomes the endpoint's FailureReason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@runtime_checkable
class EndpointDeployer(Protocol):
    """Starts, replaces and stops the model-server instances behind endpoints.

    `config` is the endpoint config as DescribeEndpointConfig returns it
    (`EndpointConfigName`, `ProductionVariants` with `VariantName`, `ModelName`,
    `InstanceType`, `InitialInstanceCount`, `InitialVariantWeight`, …); `models` maps each
    `ModelName` the variants use to the model as DescribeModel returns it (`ModelName`,
    `ModelArn`, `PrimaryContainer` or `Containers` with `Image`, `ModelDataUrl`,
    `Environment`, …). Both are snapshots: the records may be deleted while the endpoint runs.
    """

    async def deploy(
        self, endpoint_name: str, config: dict[str, Any], models: dict[str, dict]
    ) -> None:
        """Bring the endpoint to `config`; return once every instance is healthy.

        With nothing running this creates the fleet. With a fleet running (UpdateEndpoint)
        it is blue/green: start the new fleet, move traffic, then stop the old one. Raise
        `DeployFailed(reason)` if it cannot; on an update the old fleet must then still be
        serving. After a gateway restart `restore` calls it again for every live endpoint
        (instances the store still lists may be adopted or replaced). May be cancelled
        (gateway shutdown): stop what it started.
        """
        ...

    async def undeploy(self, endpoint_name: str) -> None:
        """Stop every instance of the endpoint; a no-op if none is running."""
        ...

    async def scale(
        self, endpoint_name: str, desired: dict[str, tuple[float | None, int | None]]
    ) -> None:
        """Move the running fleet to new (weight, instance count) per variant name, either
        left `None` to keep (UpdateEndpointWeightsAndCapacities). Weights apply at once;
        added instances take traffic once healthy; removed ones get no new requests and
        are stopped once their streams end (or the drain bound passes). Raise
        `DeployFailed(reason)` if it cannot: the fleet then keeps its old shape."""
        ...

    def instance_counts(self, endpoint_name: str) -> dict[str, int]:
        """Healthy instances per variant name right now (cheap: called by DescribeEndpoint)."""
        ...


@runtime_checkable
class GatewayDeployer(EndpointDeployer, Protocol):
    """What the gateway itself asks of its deployer, beside the control plane's calls."""

    def check_model(self, model: Mapping[str, Any]) -> None:
        """Refuse at CreateModel a model no instance could run (`AwsError`)."""
        ...

    def start(self) -> None:
        """Start the health checks (needs a running event loop)."""
        ...

    def check_soon(self, instance: Any = None) -> None:
        """Check instances now: the runtime saw one fail a request."""
        ...

    async def reap_unrecorded(self) -> int:
        """Stop instances a dead gateway started without recording them; how many."""
        ...

    async def reap_orphans(self, keep: Collection[str]) -> int:
        """Stop recorded instances of endpoints other than `keep`; how many."""
        ...

    async def close(self, *, stop_instances: bool = True) -> None:
        """Stop the health checks and (unless told to leave them) every instance."""
        ...
