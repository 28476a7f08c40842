"""The gateway's `EndpointDeployer`: planning, and the fleet manager of every endpoint.

`plan_variants` turns an endpoint config and its models into one `VariantPlan` per
production variant (pure). `FleetManager` owns the life of the instances; an
`InstanceLauncher` (`launcher.py`) runs them, by default as local model-server processes.
Each variant × its instance count becomes one model server with the container's
`Environment` and a per-instance secret the model server demands on every request (so only
the gateway can reach it), its output in `<state_dir>/logs/<endpoint>/<instance>.log`. An
instance counts once `/ping` answers 200 within `ContainerStartupHealthCheckTimeoutInSeconds`.

While an endpoint runs, a health loop pings every instance; a dead or unresponsive one is
retired (its sticky sessions end with it) and replaced while the others keep serving. A
model folder that vanished is materialised again (in place, for the instances still
running; before a replacement starts). A replacement that fails is retried with back-off,
one log line each; a variant left with no instance after `_FAIL_AFTER` failed
replacements fails the endpoint, with the reason (`on_failed`), and its fleet is stopped.
UpdateEndpoint is blue/green: the new fleet starts and passes its health checks, routing
switches to it in one step, and the old fleet drains (in-flight requests finish, bounded)
before it is stopped. UpdateEndpointWeightsAndCapacities changes the running fleet
(`scale`): weights at once, added instances routed once healthy, removed ones drained.

Instances are recorded in the store. After a gateway crash, `deploy` (from
`ControlPlane.restore`) adopts instances the launcher still finds as recorded, that still
run the same deployment, still hold their secret and still answer `/ping`; anything else
it finds recorded is stopped and started afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from streamhost.client.images import Personality, UnsupportedImage, personality

from . import errors
from .artifacts import ArtifactError, location_problem, materialize, model_root
from .launcher import InstanceLauncher, Launched, LaunchSpec, LocalProcessLauncher
from .lifecycle import DeployFailed
from .router import Instance, Router, Variant
from .store import InstanceRecord, Store

__all__ = [
    "FleetManager",
    "InstanceState",
    "ProvisionerSettings",
    "VariantPlan",
    "gpu_available",
    "is_accelerated",
    "plan_variants",
    "read_instance_logs",
]

log = logging.getLogger(__name__)

SECRET_HEADER = "x-streamhost-instance-secret"
# Where SageMaker puts model data; container environments often point at it.
SAGEMAKER_MODEL_DIR = "/opt/ml/model"
# Accelerated instance families: GPUs (g, p), Inferentia, Trainium, Gaudi.
_ACCELERATED_FAMILIES = ("ml.g", "ml.p", "ml.inf", "ml.trn", "ml.dl")
_READY_MARKER = ".ready"
_PORT_IN_USE = ("address already in use", "errno 98")
_LAUNCH_ATTEMPTS = 3  # a port taken between our probe and the child's bind is retried
_REPLACE_BACKOFF = (2.0, 5.0, 15.0, 60.0)
_FAIL_AFTER = 3  # failed replacements in a row, with no instance left, fail the endpoint


class InstanceState:
    """An instance's state as recorded in the store."""

    STARTING = "Starting"
    IN_SERVICE = "InService"
    DRAINING = "Draining"
    STOPPING = "Stopping"


@dataclass(frozen=True)
class ProvisionerSettings:
    """How instances are started, checked and stopped (all durations in seconds)."""

    state_dir: Path
    environment: Mapping[str, str] = field(default_factory=dict)
    python: str = sys.executable
    host: str = "127.0.0.1"
    startup_timeout: float = 600.0  # ContainerStartupHealthCheckTimeoutInSeconds default
    download_timeout: float = 3600.0  # ModelDataDownloadTimeoutInSeconds default
    health_interval: float = 2.0
    ping_timeout: float = 2.0  # SageMaker's /ping timeout
    unhealthy_after: int = 3  # consecutive failed pings before an instance is replaced
    drain_timeout: float = 30.0
    stop_timeout: float = 30.0  # SIGTERM → SIGKILL, as SageMaker gives containers
    log_tail_lines: int = 15
    # Whether GPU types get a GPU. None: detect on this machine (nvidia-smi,
    # /proc/driver/nvidia); the Ray launcher places them on nodes that have one.
    gpu: bool | None = None


@dataclass(frozen=True)
class VariantPlan:
    """One production variant as the provisioner runs it."""

    name: str
    model_name: str
    container: dict[str, Any]
    api: Personality
    instance_type: str | None
    count: int
    weight: float
    startup_timeout: float
    download_timeout: float
    random_routing: bool
    fingerprint: str  # identifies the variant + model definition, for adoption


@dataclass(eq=False)
class _ManagedInstance:
    route: Instance
    endpoint: str
    deployment_id: str
    plan: VariantPlan
    process: Launched
    log_path: Path
    model_dir: Path
    started_at: float
    failures: int = 0


@dataclass(eq=False)
class _Fleet:
    """One deployment of an endpoint: its variants' plans, model folders and instances."""

    endpoint: str
    deployment_id: str
    root: Path
    plans: dict[str, VariantPlan]
    variants: dict[str, Variant] = field(default_factory=dict)
    instances: list[_ManagedInstance] = field(default_factory=list)
    model_dirs: dict[str, tuple[Path, Path]] = field(default_factory=dict)  # (data, root)
    replacing: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    retry_at: dict[str, float] = field(default_factory=dict)
    retired: bool = False
    # One materialisation of a variant's model folder at a time (replacements run at once).
    preparing: asyncio.Lock = field(default_factory=asyncio.Lock)


EndpointFailed = Callable[[str, str], Awaitable[None]]
"""Told (endpoint name, reason) when a running endpoint has lost what it cannot replace."""


class FleetManager:
    """Owns the life of every endpoint's instances; `launcher` runs them (by default as
    model-server processes on this machine)."""

    def __init__(
        self,
        settings: ProvisionerSettings,
        store: Store,
        router: Router,
        on_failed: EndpointFailed | None = None,
        launcher: InstanceLauncher | None = None,
        on_ready: Callable[[str, str, float], None] | None = None,
    ) -> None:
        self.settings = settings
        self.on_ready = on_ready  # (endpoint, variant, seconds from launch to healthy)
        self.launcher = launcher or LocalProcessLauncher(
            settings.python, settings.host, settings.stop_timeout, settings.state_dir / "endpoints"
        )
        self.store = store
        self.router = router
        self.on_failed = on_failed
        self._fleets: dict[str, _Fleet] = {}
        self._retiring: set[_Fleet] = set()  # old fleets draining after an update
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._health: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._http: aiohttp.ClientSession | None = None
        self._closing = False

    # -- EndpointDeployer ------------------------------------------------------------------

    async def deploy(
        self, endpoint_name: str, config: dict[str, Any], models: dict[str, dict]
    ) -> None:
        """Bring the endpoint to `config` (create, blue/green update, or restore)."""
        self.start()
        key = endpoint_name.lower()
        async with self._lock(key):
            plans = plan_variants(config, models, self.settings)
            old = self._fleets.get(key)
            adopted: list[_ManagedInstance] = []
            deployment_id = secrets.token_hex(4)
            if old is None:
                adopted, deployment_id = await self._adopt_or_reap(endpoint_name, plans)
            fleet = _Fleet(
                endpoint=endpoint_name,
                deployment_id=deployment_id,
                root=self._endpoint_dir(key) / deployment_id,
                plans=plans,
            )
            started: list[_ManagedInstance] = []
            try:
                await self._prepare_models(fleet)
                fleet.instances.extend(adopted)
                wanted = []
                for plan in plans.values():
                    have = sum(1 for m in adopted if m.plan.name == plan.name)
                    wanted += [plan] * max(plan.count - have, 0)
                await self._launch_all(fleet, wanted, started)
            except BaseException:
                # Shielded: a cancelled deploy (gateway shutdown) must still stop what it
                # started, and a failed update must leave the old fleet alone.
                await asyncio.shield(self._abandon(fleet, started, adopted, keep_root=old))
                raise
            fleet.instances.extend(started)
            for plan in plans.values():
                fleet.variants[plan.name] = Variant(
                    name=plan.name,
                    weight=plan.weight,
                    instances=[m.route for m in fleet.instances if m.plan.name == plan.name],
                    random_routing=plan.random_routing,
                )
            self.router.publish(endpoint_name, fleet.variants.values())
            self._fleets[key] = fleet
            if old is not None:
                # Tracked until stopped, so a shutdown during the drain still stops it.
                self._retiring.add(old)
                try:
                    await self._retire_fleet(old, drain=True)
                finally:
                    self._retiring.discard(old)

    async def undeploy(self, endpoint_name: str) -> None:
        """Stop every instance of the endpoint (those recorded by a previous gateway too)."""
        key = endpoint_name.lower()
        async with self._lock(key):
            self.router.withdraw(endpoint_name)
            fleet = self._fleets.pop(key, None)
            if fleet is not None:
                await self._retire_fleet(fleet, drain=False)
            for record in await asyncio.to_thread(self.store.list_instances, endpoint_name):
                await self._stop_recorded(record)
            await asyncio.to_thread(shutil.rmtree, self._endpoint_dir(key), True)

    async def scale(
        self, endpoint_name: str, desired: dict[str, tuple[float | None, int | None]]
    ) -> None:
        """New weights at once; instances added (healthy first) or drained and removed."""
        key = endpoint_name.lower()
        async with self._lock(key):
            fleet = self._fleets.get(key)
            if fleet is None or fleet.retired:
                raise DeployFailed(f"Endpoint {endpoint_name} has no running instances.")
            plans = dict(fleet.plans)
            for name, (weight, count) in desired.items():
                plan = plans[name]
                plans[name] = dataclasses.replace(
                    plan,
                    weight=plan.weight if weight is None else float(weight),
                    count=plan.count if count is None else int(count),
                )
            wanted: list[VariantPlan] = []
            for plan in plans.values():
                have = sum(1 for m in fleet.instances if m.plan.name == plan.name)
                wanted += [plan] * max(plan.count - have, 0)
            started: list[_ManagedInstance] = []
            try:
                await self._launch_all(fleet, wanted, started)
            except BaseException:
                await asyncio.shield(asyncio.gather(*(self._stop_instance(m) for m in started)))
                raise
            fleet.plans = plans
            for managed in started:
                fleet.instances.append(managed)
                self.router.add(fleet.endpoint, managed.route)
            leaving: list[_ManagedInstance] = []
            for plan in plans.values():
                fleet.variants[plan.name].weight = plan.weight
                mine = [m for m in fleet.instances if m.plan.name == plan.name]
                extra = len(mine) - plan.count
                if extra > 0:  # the newest go first: the oldest hold the longest sessions
                    leaving += sorted(mine, key=lambda m: m.started_at)[-extra:]
            for managed in leaving:
                fleet.instances.remove(managed)
                self.router.retire(managed.route)
            log.info(
                "endpoint %s scaled: %s",
                endpoint_name,
                ", ".join(f"{p.name} {p.count} x weight {p.weight:g}" for p in plans.values()),
            )
        await self._drain_and_stop(leaving)

    def instance_counts(self, endpoint_name: str) -> dict[str, int]:
        """Healthy (routable) instances per variant."""
        return self.router.healthy_counts(endpoint_name)

    # -- what the control plane asks before accepting a model ------------------------------

    def check_model(self, model: Mapping[str, Any]) -> None:
        """Refuse, at CreateModel, a model this provisioner could never run (`AwsError`)."""
        containers = list(model.get("Containers") or [])
        if not containers and model.get("PrimaryContainer") is not None:
            containers = [model["PrimaryContainer"]]
        if len(containers) > 1:
            raise errors.validation_error(
                f"streamhost runs one container per model; this model has {len(containers)} "
                "(inference pipelines are not supported)."
            )
        for container in containers:
            image = container.get("Image")
            if not image:
                raise errors.validation_error(
                    "streamhost needs the container's Image to choose its API (TGI or LMI)."
                )
            try:
                personality(image)
            except UnsupportedImage as error:
                raise errors.validation_error(str(error)) from None
            problem = location_problem(container)
            if problem is not None:
                raise errors.validation_error(problem)

    # -- lifecycle of the provisioner itself ------------------------------------------------

    def start(self) -> None:
        """Start the health loop (idempotent; needs a running event loop)."""
        if self._health is None and not self._closing:
            self._wake = asyncio.Event()
            self._health = asyncio.get_running_loop().create_task(
                self._health_loop(), name="streamhost-health"
            )

    def check_soon(self, instance: Instance | None = None) -> None:
        """Run the health loop now (the runtime saw an instance fail a request)."""
        if self._wake is not None:
            self._wake.set()

    async def reap_orphans(self, keep: Collection[str]) -> int:
        """Stop recorded instances of endpoints other than `keep` (which restore handles);
        how many records were cleared."""
        keep_keys = {name.lower() for name in keep} | set(self._fleets)
        records = await asyncio.to_thread(self.store.list_instances)
        stale = [r for r in records if r.endpoint_name.lower() not in keep_keys]
        for record in stale:
            await self._stop_recorded(record)
        return len(stale)

    async def reap_unrecorded(self) -> int:
        """Stop model servers started from this gateway's state folder that no store record
        names (a gateway that died between starting an instance and recording it left
        them); how many. Call before anything is deployed."""
        records = await asyncio.to_thread(self.store.list_instances)
        strays = await asyncio.to_thread(self.launcher.unrecorded, records)
        for process in strays:
            log.warning("stopping model server pid %s, which no instance record names", process.pid)
            await self.launcher.stop(process)
        return len(strays)

    async def close(self, *, stop_instances: bool = True) -> None:
        """Stop the health loop and (unless `stop_instances` is False, which leaves them
        for a later gateway to adopt, as a crash would) every instance."""
        self._closing = True
        tasks = [t for t in (self._health, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._health = None
        if stop_instances:
            fleets = [*self._retiring, *self._fleets.values()]
            for fleet in fleets:
                self.router.withdraw(fleet.endpoint)
            await asyncio.gather(*(self._retire_fleet(f, drain=False) for f in fleets))
        self._fleets.clear()
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _prepare_models(self, fleet: _Fleet) -> None:
        """Materialise each variant's model data once; its instances share the folder."""
        for plan in fleet.plans.values():
            await self._prepare_model(fleet, plan)

    async def _prepare_model(self, fleet: _Fleet, plan: VariantPlan) -> bool:
        """Materialise the variant's model data unless it is there (marked ready); whether
        it had to be. `DeployFailed` if it cannot be."""
        variant_dir = fleet.root / _safe_name(plan.name)
        data_dir = variant_dir / "model"
        async with fleet.preparing:
            made = not (variant_dir / _READY_MARKER).exists()
            if made:
                await asyncio.to_thread(shutil.rmtree, data_dir, True)
                try:
                    await asyncio.to_thread(
                        materialize, plan.container, data_dir, timeout=plan.download_timeout
                    )
                    (variant_dir / _READY_MARKER).touch()
                except ArtifactError as error:
                    raise DeployFailed(f"Variant {plan.name}: {error}") from None
                except OSError as error:
                    raise DeployFailed(
                        f"Variant {plan.name}: cannot write its model folder {data_dir}: "
                        f"{error.strerror or error}"
                    ) from None
            # TGI and vLLM load /opt/ml/model itself; LMI may load its only subfolder.
            root = data_dir if plan.api in ("tgi", "vllm") else model_root(data_dir)
            fleet.model_dirs[plan.name] = (data_dir, root)
        return made

    # -- starting instances ----------------------------------------------------------------

    async def _launch_all(
        self, fleet: _Fleet, plans: list[VariantPlan], started: list[_ManagedInstance]
    ) -> None:
        """Start instances concurrently; the first failure cancels the rest and is raised."""
        if not plans:
            return
        tasks = [asyncio.create_task(self._launch(fleet, plan, started)) for plan in plans]
        try:
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            failure = None if task.cancelled() else task.exception()
            if failure is not None:
                raise failure

    async def _launch(
        self, fleet: _Fleet, plan: VariantPlan, started: list[_ManagedInstance]
    ) -> _ManagedInstance:
        """Start one instance and wait until it is healthy; `DeployFailed` otherwise.

        The instance is appended to `started` as soon as its process exists, so whoever
        called can stop it whatever happens next.
        """
        for attempt in range(1, _LAUNCH_ATTEMPTS + 1):
            managed = await self._spawn(fleet, plan, started)
            try:
                await self._wait_healthy(managed)
            except DeployFailed as failure:
                if not _port_taken(managed.log_path):
                    raise failure from None
                started.remove(managed)
                await self._stop_instance(managed)
                if attempt < _LAUNCH_ATTEMPTS:
                    continue
                raise DeployFailed(
                    f"Instance {managed.route.instance_id} of variant {plan.name} could not "
                    f"listen on {self.settings.host}: each of the {_LAUNCH_ATTEMPTS} free ports "
                    "the gateway chose was taken by another process before the instance could "
                    "bind it (address already in use). Stop whatever keeps taking ports on "
                    f"this machine, then recreate the endpoint. {failure}"
                ) from None
            await self._set_state(managed, InstanceState.IN_SERVICE)
            log.info(
                "instance %s of endpoint %s is healthy on port %d (pid %s)",
                managed.route.instance_id,
                fleet.endpoint,
                managed.route.port,
                managed.process.pid,
            )
            return managed
        raise AssertionError("unreachable")

    async def _spawn(
        self, fleet: _Fleet, plan: VariantPlan, started: list[_ManagedInstance]
    ) -> _ManagedInstance:
        key = fleet.endpoint.lower()
        instance_id = f"{_safe_name(plan.name)}-{secrets.token_hex(4)}"
        secret = secrets.token_urlsafe(24)
        data_dir, root = fleet.model_dirs[plan.name]
        log_path = self.settings.state_dir / "logs" / key / f"{instance_id}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        spec = LaunchSpec(
            instance_id=instance_id,
            endpoint=fleet.endpoint,
            deployment_id=fleet.deployment_id,
            instance_type=plan.instance_type,
            api=plan.api,
            model_data=data_dir,
            model_root=root,
            environment={
                **self.settings.environment,
                **_container_environment(plan.container, data_dir),
                "STREAMHOST_INSTANCE_SECRET": secret,
                "PYTHONUNBUFFERED": "1",  # log lines reach the file as they happen
            },
            log_path=log_path,
            banner=(
                f"--- streamhost: starting instance {instance_id} of endpoint {fleet.endpoint} "
                f"(variant {plan.name}, {plan.instance_type or 'serverless'}, {plan.api} API) "
                f"at {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n"
            ),
        )
        process = await self.launcher.launch(spec)
        managed = _ManagedInstance(
            route=Instance(instance_id, plan.name, process.host, process.port, secret),
            endpoint=fleet.endpoint,
            deployment_id=fleet.deployment_id,
            plan=plan,
            process=process,
            log_path=log_path,
            model_dir=root,
            started_at=time.time(),
        )
        started.append(managed)
        await self._put_record(managed, InstanceState.STARTING)
        return managed

    async def _wait_healthy(self, managed: _ManagedInstance) -> None:
        timeout = managed.plan.startup_timeout
        deadline = time.monotonic() + timeout
        delay = 0.05
        instance_id = managed.route.instance_id
        while True:
            if not managed.process.alive():
                code = managed.process.returncode()
                raise DeployFailed(
                    f"Instance {instance_id} of variant {managed.plan.name} exited"
                    f"{'' if code is None else f' with status {code}'} before passing its "
                    f"health check. {self._tail(managed)}"
                )
            status, body = await self._ping(managed.route)
            if status == 200:
                if self.on_ready is not None:
                    self.on_ready(
                        managed.endpoint, managed.plan.name, time.time() - managed.started_at
                    )
                return
            failed = _load_failure(status, body)
            if failed is not None:
                raise DeployFailed(
                    f"Instance {instance_id} of variant {managed.plan.name} could not load "
                    f"its model: {failed}. {self._tail(managed)}"
                )
            if time.monotonic() > deadline:
                raise DeployFailed(
                    f"Instance {instance_id} of variant {managed.plan.name} did not pass its "
                    f"/ping health check within ContainerStartupHealthCheckTimeoutInSeconds="
                    f"{timeout:g}. {self._tail(managed)}"
                )
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.2)  # a start is seen within 0.2 s of its end

    def _tail(self, managed: _ManagedInstance) -> str:
        lines = _tail_lines(managed.log_path, self.settings.log_tail_lines)
        if not lines:
            return "The instance wrote no log."
        return "Last log lines: " + " | ".join(lines)

    # -- adoption after a restart ----------------------------------------------------------

    async def _adopt_or_reap(
        self, endpoint_name: str, plans: dict[str, VariantPlan]
    ) -> tuple[list[_ManagedInstance], str]:
        """Instances a previous gateway left that can serve `plans` as they are; every
        other recorded instance of the endpoint is stopped. Returns them and the
        deployment id whose model folders they use (a fresh id if none)."""
        records = await asyncio.to_thread(self.store.list_instances, endpoint_name)
        candidates: dict[str, list[tuple[InstanceRecord, Launched]]] = {}
        for record in records:
            process = await asyncio.to_thread(self.launcher.find, record)
            plan = plans.get(record.variant_name)
            usable = (
                process is not None
                and plan is not None
                and record.state == InstanceState.IN_SERVICE
                and record.detail.get("fingerprint") == plan.fingerprint
                and await asyncio.to_thread(self.launcher.holds_secret, process, record.secret)
                and Path(record.detail.get("model_dir", "")).is_dir()
                and (await self._ping(_route(record)))[0] == 200
            )
            if usable and process is not None:
                deployment = str(record.detail.get("deployment"))
                candidates.setdefault(deployment, []).append((record, process))
            else:
                await self._stop_recorded(record, process)
        if not candidates:
            return [], secrets.token_hex(4)
        # Instances of one deployment only: they share its model folders.
        deployment = max(candidates, key=lambda d: len(candidates[d]))
        adopted: list[_ManagedInstance] = []
        for other, pairs in candidates.items():
            for record, process in pairs:
                plan = plans[record.variant_name]
                same_variant = sum(1 for m in adopted if m.plan.name == plan.name)
                if other != deployment or same_variant >= plan.count:
                    await self._stop_recorded(record, process)
                    continue
                adopted.append(
                    _ManagedInstance(
                        route=_route(record),
                        endpoint=endpoint_name,
                        deployment_id=deployment,
                        plan=plan,
                        process=process,
                        log_path=Path(record.detail.get("log", "")),
                        model_dir=Path(record.detail["model_dir"]),
                        started_at=record.started_at,
                    )
                )
                log.info(
                    "adopted instance %s of endpoint %s (pid %s, port %s)",
                    record.instance_id,
                    endpoint_name,
                    process.pid,
                    record.port,
                )
        return adopted, deployment

    async def _stop_recorded(self, record: InstanceRecord, process: Launched | None = None) -> None:
        process = process or await asyncio.to_thread(self.launcher.find, record)
        if process is not None:
            log.info("stopping orphaned instance %s (pid %s)", record.instance_id, process.pid)
            await self.launcher.stop(process)
        await asyncio.to_thread(self.store.delete_instance, record.instance_id)

    # -- health ------------------------------------------------------------------------------

    async def _health_loop(self) -> None:
        assert self._wake is not None
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.health_interval)
            self._wake.clear()
            for fleet in list(self._fleets.values()):
                try:
                    await self._check_fleet(fleet)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("health check of endpoint %s failed", fleet.endpoint)

    async def _check_fleet(self, fleet: _Fleet) -> None:
        await self._restore_model_folders(fleet)
        await asyncio.gather(*(self._check(fleet, m) for m in list(fleet.instances)))
        if fleet.retired:
            return
        now = time.monotonic()
        for plan in fleet.plans.values():
            live = sum(1 for m in fleet.instances if m.plan.name == plan.name)
            missing = plan.count - live - fleet.replacing.get(plan.name, 0)
            if missing > 0 and now >= fleet.retry_at.get(plan.name, 0.0):
                for _ in range(missing):
                    self._background(self._replace(fleet, plan))

    async def _restore_model_folders(self, fleet: _Fleet) -> None:
        """Materialise again, in place, the model folder of a variant whose instances still
        run (they could not be restarted or adopted without it)."""
        now = time.monotonic()
        for plan in fleet.plans.values():
            variant_dir = fleet.root / _safe_name(plan.name)
            if (
                fleet.retired
                or (variant_dir / _READY_MARKER).exists()
                or fleet.replacing.get(plan.name, 0) > 0
                or now < fleet.retry_at.get(plan.name, 0.0)
                or not any(m.plan.name == plan.name for m in fleet.instances)
            ):
                continue
            log.warning(
                "the model folder of variant %s of endpoint %s is gone; materialising it again",
                plan.name,
                fleet.endpoint,
            )
            try:
                await self._prepare_model(fleet, plan)
            except DeployFailed as failure:
                self._back_off(fleet, plan, f"restoring its model folder failed: {failure}")

    async def _check(self, fleet: _Fleet, managed: _ManagedInstance) -> None:
        if fleet.retired or managed not in fleet.instances:
            return
        if not managed.process.alive():
            code = managed.process.returncode()
            await self._lose(fleet, managed, "exited" + ("" if code is None else f" ({code})"))
            return
        status, _ = await self._ping(managed.route)
        if status == 200:
            managed.failures = 0
            self.router.mark_up(managed.route)
            return
        managed.failures += 1
        if managed.failures >= self.settings.unhealthy_after:
            await self._lose(fleet, managed, f"failed {managed.failures} health checks")

    async def _lose(self, fleet: _Fleet, managed: _ManagedInstance, why: str) -> None:
        if managed not in fleet.instances:
            return
        log.warning(
            "instance %s of endpoint %s %s; replacing it",
            managed.route.instance_id,
            fleet.endpoint,
            why,
        )
        fleet.instances.remove(managed)
        self.router.retire(managed.route)
        await self._stop_instance(managed)

    async def _replace(self, fleet: _Fleet, plan: VariantPlan) -> None:
        fleet.replacing[plan.name] = fleet.replacing.get(plan.name, 0) + 1
        started: list[_ManagedInstance] = []
        failure: str | None = None
        try:
            if await self._prepare_model(fleet, plan):
                log.warning(
                    "materialised the model folder of variant %s of endpoint %s again",
                    plan.name,
                    fleet.endpoint,
                )
            managed = await self._launch(fleet, plan, started)
            if fleet.retired or self._closing:
                await self._stop_instance(managed)
                return
            fleet.instances.append(managed)
            self.router.add(fleet.endpoint, managed.route)
            fleet.failures[plan.name] = 0
        except DeployFailed as error:
            failure = error.reason
        except OSError as error:
            # The state folder changed under us (a folder removed, a disk full): a reason,
            # not a traceback per health check.
            failure = f"{type(error).__name__}: {error}"
        except BaseException:
            for managed in started:
                await asyncio.shield(self._stop_instance(managed))
            raise
        finally:
            fleet.replacing[plan.name] -= 1
        if failure is None:
            return
        for managed in started:
            await self._stop_instance(managed)
        self._back_off(fleet, plan, f"replacing an instance failed: {failure}")
        live = sum(1 for m in fleet.instances if m.plan.name == plan.name)
        if live == 0 and fleet.failures[plan.name] >= _FAIL_AFTER:
            await self._fail(
                fleet,
                f"Variant {plan.name} lost its instances and {_FAIL_AFTER} replacements "
                f"failed; the last: {failure}",
            )

    def _back_off(self, fleet: _Fleet, plan: VariantPlan, what: str) -> None:
        """Count a failure of the variant and hold off its next attempt (one log line)."""
        count = fleet.failures.get(plan.name, 0)
        fleet.failures[plan.name] = count + 1
        backoff = _REPLACE_BACKOFF[min(count, len(_REPLACE_BACKOFF) - 1)]
        fleet.retry_at[plan.name] = time.monotonic() + backoff
        log.error(
            "endpoint %s, variant %s: %s (next try in %gs)",
            fleet.endpoint,
            plan.name,
            what,
            backoff,
        )

    async def _fail(self, fleet: _Fleet, reason: str) -> None:
        """Stop a running fleet that cannot be made whole, and fail its endpoint."""
        key = fleet.endpoint.lower()
        async with self._lock(key):
            if self._fleets.get(key) is not fleet or fleet.retired:
                return  # updated, deleted or failed meanwhile
            log.error("endpoint %s failed: %s", fleet.endpoint, reason)
            del self._fleets[key]
            self.router.withdraw(fleet.endpoint)
            await self._retire_fleet(fleet, drain=False)
        if self.on_failed is not None:
            await self.on_failed(fleet.endpoint, reason)

    # -- stopping ------------------------------------------------------------------------------

    async def _retire_fleet(self, fleet: _Fleet, *, drain: bool) -> None:
        fleet.retired = True
        for managed in fleet.instances:
            self.router.retire(managed.route)
        instances = list(fleet.instances)
        fleet.instances.clear()
        if drain:
            await self._drain_and_stop(instances)
        else:
            await asyncio.gather(*(self._stop_instance(m) for m in instances))
        await asyncio.to_thread(shutil.rmtree, fleet.root, True)

    async def _drain_and_stop(self, instances: list[_ManagedInstance]) -> None:
        """Stop instances the router no longer uses once their streams have ended, or the
        drain bound has passed."""
        for managed in instances:
            await self._set_state(managed, InstanceState.DRAINING)
        deadline = time.monotonic() + self.settings.drain_timeout
        while any(m.route.outstanding > 0 for m in instances) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.gather(*(self._stop_instance(m) for m in instances))

    async def _abandon(
        self,
        fleet: _Fleet,
        started: list[_ManagedInstance],
        adopted: list[_ManagedInstance],
        keep_root: _Fleet | None,
    ) -> None:
        """Undo a deployment that failed or was cancelled."""
        fleet.retired = True
        await asyncio.gather(*(self._stop_instance(m) for m in [*started, *adopted]))
        if keep_root is None or keep_root.root != fleet.root:
            await asyncio.to_thread(shutil.rmtree, fleet.root, True)

    async def _stop_instance(self, managed: _ManagedInstance) -> None:
        managed.route.up = False
        managed.route.gone = True
        await self._set_state(managed, InstanceState.STOPPING)
        await self.launcher.stop(managed.process)
        await asyncio.to_thread(self.store.delete_instance, managed.route.instance_id)
        with contextlib.suppress(OSError), managed.log_path.open("a") as file:
            file.write(
                f"--- streamhost: stopped instance {managed.route.instance_id} at "
                f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n"
            )

    # -- helpers --------------------------------------------------------------------------------

    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    def _endpoint_dir(self, key: str) -> Path:
        return self.settings.state_dir / "endpoints" / key

    def _background(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ping(self, route: Instance) -> tuple[int | None, bytes]:
        """(status, body) of the instance's `/ping`; (None, b"") if it cannot be reached."""
        if self._http is None:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.settings.ping_timeout)
            )
        try:
            async with self._http.get(
                route.url + "/ping", headers={SECRET_HEADER: route.secret}
            ) as response:
                return response.status, await response.read()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            return None, b""

    async def _set_state(self, managed: _ManagedInstance, state: str) -> None:
        await asyncio.to_thread(self.store.set_instance_state, managed.route.instance_id, state)

    async def _put_record(self, managed: _ManagedInstance, state: str) -> None:
        record = InstanceRecord(
            instance_id=managed.route.instance_id,
            endpoint_name=managed.endpoint,
            variant_name=managed.plan.name,
            state=state,
            host=managed.route.host,
            port=managed.route.port,
            pid=managed.process.pid,
            secret=managed.route.secret,
            started_at=managed.started_at,
            detail={
                "deployment": managed.deployment_id,
                "fingerprint": managed.plan.fingerprint,
                **managed.process.detail(),
                "model_dir": str(managed.model_dir),
                "log": str(managed.log_path),
                "api": managed.plan.api,
                "instance_type": managed.plan.instance_type,
            },
        )
        try:
            await asyncio.to_thread(self.store.put_instance, record)
        except KeyError:
            raise DeployFailed(f"Endpoint {managed.endpoint} was deleted.") from None


# -- planning ----------------------------------------------------------------------------


def plan_variants(
    config: dict[str, Any], models: dict[str, dict], settings: ProvisionerSettings
) -> dict[str, VariantPlan]:
    """The variants of an endpoint config as the fleet manager runs them (pure: no I/O but
    the GPU probe); `DeployFailed` for a config no launcher can run."""
    gpu = settings.gpu if settings.gpu is not None else gpu_available()
    plans: dict[str, VariantPlan] = {}
    for variant in config.get("ProductionVariants", []):
        name = variant["VariantName"]
        model_name = variant.get("ModelName")
        model = models.get(model_name or "")
        if model is None:
            raise DeployFailed(f"Variant {name} names no model streamhost knows.")
        containers = list(model.get("Containers") or [])
        if not containers and model.get("PrimaryContainer") is not None:
            containers = [model["PrimaryContainer"]]
        if len(containers) != 1:
            raise DeployFailed(
                f"Model {model_name} has {len(containers)} containers; streamhost runs "
                "exactly one per model."
            )
        container = containers[0]
        try:
            api = personality(container.get("Image", ""))
        except UnsupportedImage as error:
            raise DeployFailed(str(error)) from None
        serverless = variant.get("ServerlessConfig") is not None
        instance_type = None if serverless else variant.get("InstanceType")
        if instance_type and is_accelerated(instance_type) and not gpu:
            log.warning(
                "variant %s asks for %s but this machine has no GPU: running on CPU",
                name,
                instance_type,
            )
        # Capacity changes (Desired*) keep the instances: not part of what they run.
        defined = {k: v for k, v in variant.items() if not k.startswith("Desired")}
        digest = hashlib.sha256(
            json.dumps({"variant": defined, "model": model}, sort_keys=True).encode()
        ).hexdigest()[:16]
        routing = (variant.get("RoutingConfig") or {}).get("RoutingStrategy")
        plans[name] = VariantPlan(
            name=name,
            model_name=model_name or "",
            container=dict(container),
            api=api,
            instance_type=instance_type,
            count=1
            if serverless
            else int(variant.get("DesiredInstanceCount", variant.get("InitialInstanceCount", 1))),
            weight=float(variant.get("DesiredWeight", variant.get("InitialVariantWeight", 1.0))),
            startup_timeout=float(
                variant.get(
                    "ContainerStartupHealthCheckTimeoutInSeconds",
                    settings.startup_timeout,
                )
            ),
            download_timeout=float(
                variant.get("ModelDataDownloadTimeoutInSeconds", settings.download_timeout)
            ),
            random_routing=routing == "RANDOM",
            fingerprint=digest,
        )
    return plans


# -- module helpers ---------------------------------------------------------------------------


def is_accelerated(instance_type: str) -> bool:
    """Whether an instance type has GPUs or other accelerators (g, p, inf, trn, dl)."""
    return instance_type.startswith(_ACCELERATED_FAMILIES)


@functools.lru_cache(maxsize=1)
def gpu_available() -> bool:
    """Whether this machine has an NVIDIA GPU, found without importing torch."""
    gpus = Path("/proc/driver/nvidia/gpus")
    with contextlib.suppress(OSError):
        if gpus.is_dir() and any(gpus.iterdir()):
            return True
    executable = shutil.which("nvidia-smi")
    if executable is None:
        return False
    try:
        result = subprocess.run(
            [executable, "-L"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0 and any(
        line.startswith("GPU") for line in result.stdout.splitlines()
    )


def read_instance_logs(
    state_dir: Path, endpoint_name: str, tail: int | None = None
) -> list[tuple[str, str]]:
    """(instance id, log text) of every instance an endpoint has had, oldest first;
    `tail` keeps only each log's last lines. Reads files only: no gateway needed."""
    folder = Path(state_dir) / "logs" / endpoint_name.lower()
    if not folder.is_dir():
        return []
    logs = []
    for path in sorted(folder.glob("*.log"), key=lambda p: (p.stat().st_mtime, p.name)):
        text = path.read_text(encoding="utf-8", errors="replace")
        if tail is not None:
            text = "".join(text.splitlines(keepends=True)[-tail:]) if tail > 0 else ""
        logs.append((path.stem, text))
    return logs


def _safe_name(name: str) -> str:
    # Variant names are [a-zA-Z0-9-]; lower-cased so the folder matches any spelling.
    return "".join(c if c.isalnum() or c == "-" else "_" for c in name.lower())


def _container_environment(container: Mapping[str, Any], data_dir: Path) -> dict[str, str]:
    """The container's `Environment`, with SageMaker's model path pointed at ours."""
    env = {}
    for key, value in (container.get("Environment") or {}).items():
        text = str(value)
        if text == SAGEMAKER_MODEL_DIR or text.startswith(SAGEMAKER_MODEL_DIR + "/"):
            text = str(data_dir) + text[len(SAGEMAKER_MODEL_DIR) :]
        env[str(key)] = text
    return env


def _route(record: InstanceRecord) -> Instance:
    return Instance(
        record.instance_id, record.variant_name, record.host, record.port or 0, record.secret
    )


def _load_failure(status: int | None, body: bytes) -> str | None:
    """The model server's load error, if `/ping` says loading failed for good."""
    if status != 503:
        return None
    try:
        document = json.loads(body)
    except ValueError:
        return None
    if isinstance(document, dict) and document.get("status") == "failed":
        return str(document.get("error") or "unknown error")
    return None


def _tail_lines(path: Path, count: int) -> list[str]:
    try:
        with path.open("rb") as file:
            file.seek(0, os.SEEK_END)
            size = file.tell()
            file.seek(max(size - 16384, 0))
            text = file.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("--- streamhost:")]
    return [line[:300] for line in lines[-count:]]


def _port_taken(log_path: Path) -> bool:
    text = " ".join(_tail_lines(log_path, 20)).lower()
    return any(marker in text for marker in _PORT_IN_USE)
