"""Instances on a Ray cluster: `streamhost gateway --provisioner ray [--ray-address ADDR]`.

Each instance is a detached Ray actor, named `<endpoint>/<deployment>/<instance>` in a
namespace of the gateway's state (`namespace_for`), so a restarted gateway finds its own
actors and never another gateway's. The actor runs `serve-model` as a child process on its
node, bound to the node's address on a free port, and reports where it listens; the child
gets SIGTERM when the actor's process ends (the parent-death signal), so a lost actor or
node takes its model server with it. Ray places instances; it does not carry tokens: the
gateway relays each request to the instance over HTTP/1.1, with the instance secret.

Resources come from the `InstanceType` (`instance_resources`): its vCPUs and memory, scaled
by `--ray-resource-scale` for small clusters, and its GPUs (a GPU type needs nodes that
advertise `GPU` resources). Model data: the gateway materialises it in its state folder
(fetching `s3://` data there) as for local instances. A node that sees that folder (one
machine, or a shared file system) reads it by path; to a node that does not, the gateway
ships the files once per launch through Ray's object store (in `_SHIP_CHUNK` pieces), and
the actor writes them into a folder of its own, deleted when it stops
(`--ray-ship-models`: ship to every node).

Logs: the model server writes its output to a file of its own on its node; the gateway's
watcher pulls what is new with each poll (at most `_LOG_CHUNK` a second) and appends it to
the instance's log in the gateway's state folder, so `streamhost logs` on the gateway's
machine reads an instance's log wherever it runs. Stopping an instance pulls the rest and
deletes the node's file.

Ray is imported here only, and only when `--provisioner ray` is chosen.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import math
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

from .launcher import LaunchSpec, start_model_server
from .lifecycle import DeployFailed
from .store import InstanceRecord

__all__ = ["RayInstance", "RayLauncher", "RayUnavailable", "instance_resources", "namespace_for"]

log = logging.getLogger(__name__)

_POLL_INTERVAL = 1.0  # seconds between checks that an actor's model server still runs
_LOG_CHUNK = 1 << 20  # most bytes of an instance's log one poll brings to the gateway
_SHIP_CHUNK = 64 << 20  # the pieces model files travel in through the object store

# vCPUs of a size, and GiB of memory per vCPU of a family (SageMaker's ml.* types follow
# EC2's: m 4, c 2, r 8, t 2–4, g and inf/trn 4, p ~7.6).
_SIZE_VCPUS = {"medium": 1, "large": 2, "xlarge": 4}
_GIB_PER_VCPU = {"c": 2.0, "m": 4.0, "r": 8.0, "t": 2.0, "g": 4.0, "p": 7.6, "x": 16.0, "z": 8.0}
# GPUs per size for the GPU families; sizes not listed have one.
_GPUS = {
    "p3": {"2xlarge": 1, "8xlarge": 4, "16xlarge": 8, "24xlarge": 8},
    "p3dn": {"24xlarge": 8},
    "p4d": {"24xlarge": 8},
    "p4de": {"24xlarge": 8},
    "p5": {"48xlarge": 8},
    "p5e": {"48xlarge": 8},
    "p5en": {"48xlarge": 8},
    "p6-b200": {"48xlarge": 8},
    "p6-b300": {"48xlarge": 8},
    "p6e-gb200": {"36xlarge": 4},
    "p2": {"xlarge": 1, "8xlarge": 8, "16xlarge": 16},
}
_MULTI_GPU_SIZES = {"12xlarge": 4, "24xlarge": 4, "48xlarge": 8, "metal": 8}
_TYPE = re.compile(r"^ml\.([a-z]+)(\d*)([a-z0-9-]*)\.(\w+)$")


class RayUnavailable(Exception):
    """Ray cannot be used (not installed, or the cluster cannot be reached); one line."""


def namespace_for(state_url: str) -> str:
    """The Ray namespace of one gateway state: its actors, and only its."""
    return "streamhost-" + hashlib.sha256(state_url.encode()).hexdigest()[:12]


def instance_resources(instance_type: str | None, scale: float = 1.0) -> dict[str, Any]:
    """Ray actor options for an `InstanceType`: CPUs and memory (times `scale`), GPUs.

    Sizes: medium 1 vCPU, large 2, xlarge 4, Nxlarge 4·N (metal as the largest size of
    its family, 96). GPU families (g*, p*) have one GPU per instance up to 8xlarge and
    16xlarge, four at 12xlarge and 24xlarge, eight at 48xlarge, with the p families'
    own counts; Inferentia and Trainium types ask for Ray's `neuron_cores`, Gaudi (dl1)
    for its `HPU`s. The counts are rules with the exceptions listed, not a price list:
    check a type that matters against its page before sizing a cluster for it.
    """
    if instance_type is None:  # serverless: the smallest slot
        return {"num_cpus": max(scale, 0.01), "memory": int(2 * 2**30 * scale)}
    match = _TYPE.match(instance_type)
    if match is None:
        raise ValueError(f"not a SageMaker instance type: {instance_type!r}")
    letters, generation, variant, size = match.groups()
    if size in _SIZE_VCPUS:
        vcpus = _SIZE_VCPUS[size]
    elif size.endswith("xlarge") and size[: -len("xlarge")].isdigit():
        vcpus = 4 * int(size[: -len("xlarge")])
    else:  # metal
        vcpus = 96
    gib = vcpus * _GIB_PER_VCPU.get(letters[0], 4.0)
    options: dict[str, Any] = {
        "num_cpus": max(round(vcpus * scale, 2), 0.01),
        "memory": int(gib * 2**30 * scale),
    }
    if letters in ("inf", "trn"):
        options["resources"] = {"neuron_cores": max(1, vcpus // 4)}
    elif letters == "dl":  # Gaudi accelerators: Ray's HPU resource
        options["resources"] = {"HPU": 8}
    elif letters in ("g", "p"):
        per_size = _GPUS.get(letters + generation + variant)
        if per_size is not None:
            options["num_gpus"] = per_size.get(size, 1)
        else:
            options["num_gpus"] = _MULTI_GPU_SIZES.get(size, 1)
    return options


class InstanceActor:
    """The Ray actor of one instance: runs `serve-model` on its node (made remote lazily)."""

    def __init__(self) -> None:
        self.popen: subprocess.Popen | None = None
        self.secret_hash = ""
        self.where: tuple[str, int, int] = ("", 0, 0)
        self.folder: Path | None = None  # the node's folder of the model server's log
        self.sent = 0  # bytes of that log the gateway asked for last

    def sees(self, folder: str) -> bool:
        """Whether this node sees the gateway's model folder."""
        return Path(folder).is_dir()

    def start(self, spec: LaunchSpec, shipped: Manifest | None) -> tuple[str, int, int, str]:
        """Start the model server, on the shipped model files if given; (host, port,
        pid, node id)."""
        import ray
        from streamhost.ports import free_port
        from streamhost.processes import exit_with_parent

        host = ray.util.get_node_ip_address()
        port = free_port(host)
        self.secret_hash = _hash(spec.environment.get("STREAMHOST_INSTANCE_SECRET", ""))
        self.folder = Path(tempfile.mkdtemp(prefix="streamhost-instance-"))
        try:
            if shipped is not None:
                _unpack(shipped, self.folder / "model")
                spec = _moved(spec, self.folder / "model")
            # The node's own Python; dies with this actor's process, at once, as with its
            # machine.
            self.popen = start_model_server(
                dataclasses.replace(spec, log_path=self.folder / "instance.log"),
                sys.executable,
                host,
                port,
                exit_with_parent(signal.SIGKILL),
            )
        except BaseException:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
            raise
        self.where = (host, port, self.popen.pid)
        return (*self.where, ray.get_runtime_context().get_node_id())

    def poll(self, since: int | None) -> tuple[int | None, bytes, int]:
        """The model server's exit status (None while it runs), and its log's bytes from
        `since` (None: from where the last call ended) with the offset they end at."""
        code = None if self.popen is None else self.popen.poll()
        return code, *self._log(since, _LOG_CHUNK if code is None else None)

    def describe(self) -> tuple[str, int, int, str, int | None]:
        """(host, port, pid, secret hash, exit status) for adoption."""
        return (*self.where, self.secret_hash, None if self.popen is None else self.popen.poll())

    def stop(self, timeout: float, since: int | None) -> bytes:
        """SIGTERM to the model server's group, SIGKILL past `timeout`; the log's bytes
        from `since`, and the node's copy deleted."""
        from streamhost.processes import signal_group, stop_process

        popen = self.popen
        if popen is not None and popen.poll() is None:
            stop_process(
                lambda: popen.poll() is None,
                lambda signum: signal_group(popen.pid, signum),
                timeout,
            )
            popen.wait()
        rest, _ = self._log(since, None)
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
        return rest

    def _log(self, since: int | None, most: int | None) -> tuple[bytes, int]:
        """The log's bytes from `since` (at most `most`), and the offset they end at."""
        start = self.sent if since is None else since
        chunk = b""
        if self.folder is not None:
            with contextlib.suppress(OSError), (self.folder / "instance.log").open("rb") as file:
                file.seek(start)
                chunk = file.read(-1 if most is None else most)
        self.sent = start + len(chunk)
        return chunk, self.sent


# A model folder in the object store: (path relative to it, its pieces) per file.
Manifest = list[tuple[str, list[Any]]]


def _pack(folder: Path) -> Manifest:
    """Put the files under `folder` into Ray's object store, in pieces."""
    import ray

    manifest = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        pieces = []
        with path.open("rb") as file:
            while piece := file.read(_SHIP_CHUNK):
                pieces.append(ray.put(piece))
        manifest.append((path.relative_to(folder).as_posix(), pieces))
    return manifest


def _unpack(manifest: Manifest, folder: Path) -> None:
    """Write a shipped model folder's files under `folder`, a piece at a time."""
    import ray

    for relative, pieces in manifest:
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as file:
            for piece in pieces:
                file.write(ray.get(piece))


def _moved(spec: LaunchSpec, data: Path) -> LaunchSpec:
    """`spec` with its model data at `data` (the folder, and paths into it in the
    environment), where the gateway had it elsewhere."""
    old = str(spec.model_data)

    def move(value: str) -> str:
        return (
            str(data) + value[len(old) :] if value == old or value.startswith(old + "/") else value
        )

    return dataclasses.replace(
        spec,
        model_data=data,
        model_root=Path(move(str(spec.model_root))),
        environment={key: move(value) for key, value in spec.environment.items()},
    )


def _describe(options: dict[str, Any]) -> str:
    parts = [f"{options['num_cpus']:g} CPU"]
    if options.get("num_gpus"):
        parts.append(f"{options['num_gpus']} GPU")
    for name, count in (options.get("resources") or {}).items():
        parts.append(f"{count} {name}")
    parts.append(f"{options['memory'] / 2**30:.1f} GiB")
    return ", ".join(parts)


def _free() -> str:
    import ray

    free = ray.available_resources()
    return ", ".join(
        f"{free.get(key, 0):g} {key}" for key in ("CPU", "GPU") if key in free or key == "GPU"
    )


def _kill(actor: Any) -> None:
    from ray.exceptions import RayError

    import ray

    try:
        ray.kill(actor, no_restart=True)
    except (RayError, ValueError):
        pass


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class RayInstance:
    """An instance's actor and where its model server listens."""

    def __init__(
        self,
        name: str,
        actor: Any,
        host: str,
        port: int,
        pid: int | None,
        node: str = "",
        log_path: Path | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_path  # the gateway's copy of its log (None: not kept)
        self.received: int | None = None  # where that copy ends in the node's log
        self.node = node  # the Ray node id it was placed on
        self.actor = actor
        self.host = host
        self.port = port
        self.pid = pid
        self._alive = True
        self._code: int | None = None
        self.watch: Any = None  # the task (or, for an adopted one, future) watching it
        self.secret_hash: str | None = None

    def alive(self) -> bool:
        """False once the model server exited or the actor (or its node) was lost."""
        return self._alive

    def returncode(self) -> int | None:
        """The model server's exit status, when it exited on a live actor."""
        return self._code

    def detail(self) -> dict[str, Any]:
        """The actor's name, for a restarted gateway to find it."""
        return {"ray_actor": self.name, "ray_node": self.node}

    def gone(self, code: int | None = None) -> None:
        self._alive = False
        self._code = code

    async def keep_log(self, chunk: bytes, end: int | None = None) -> None:
        """Append bytes of the model server's log (ending at `end`) to the gateway's copy."""
        if end is not None:
            self.received = end
        if chunk and self.log_path is not None:
            await asyncio.to_thread(_append, self.log_path, chunk)


def _append(path: Path, chunk: bytes) -> None:
    try:
        with path.open("ab") as file:
            file.write(chunk)
    except OSError as exc:
        log.warning("cannot keep an instance's log in %s: %s", path, exc)


class RayLauncher:
    """Instances as detached actors on a Ray cluster (see the module docstring)."""

    def __init__(
        self,
        address: str | None,
        namespace: str,
        stop_timeout: float,
        resource_scale: float = 1.0,
        placement_timeout: float = 180.0,
        ship_models: bool = False,
    ) -> None:
        self.address = address or "auto"
        self.placement_timeout = placement_timeout
        self.ship_models = ship_models
        # Model folders in the object store while launches that need them run: (manifest,
        # how many launches use it), under a lock so a folder is packed once.
        self._shipped: dict[Path, tuple[Manifest, int]] = {}
        self._packing = asyncio.Lock()
        self.namespace = namespace
        self.stop_timeout = stop_timeout
        self.resource_scale = resource_scale
        self._actor_class: Any = None
        try:  # where the watchers of adopted instances run (find is called off the loop)
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        connect(self.address, namespace)

    def _remote(self) -> Any:
        if self._actor_class is None:
            import ray

            self._actor_class = ray.remote(InstanceActor)
        return self._actor_class

    async def launch(self, spec: LaunchSpec) -> RayInstance:
        """Create the actor where its resources fit, then start its model server."""
        name = f"{spec.endpoint.lower()}/{spec.deployment_id}/{spec.instance_id}"
        options = instance_resources(spec.instance_type, self.resource_scale)
        actor = (
            self._remote()
            .options(
                name=name, namespace=self.namespace, lifetime="detached", max_restarts=0, **options
            )
            .remote()
        )
        try:
            # The first call waits for the actor's placement.
            sees = await asyncio.wait_for(
                actor.sees.remote(str(spec.model_data)), self.placement_timeout
            )
        except asyncio.TimeoutError:
            _kill(actor)
            raise DeployFailed(
                f"Instance {spec.instance_id} ({spec.instance_type or 'serverless'}: "
                f"{_describe(options)}) found no room on the Ray cluster within "
                f"{self.placement_timeout:g} s: not enough capacity for the requested "
                f"InstanceType (free now: {_free()})."
            ) from None
        except BaseException:  # cancelled (gateway shutdown), or the actor failed to start
            _kill(actor)
            raise
        manifest = None
        try:
            if self.ship_models or not sees:
                manifest = await self._ship(spec.model_data)
            host, port, pid, node = await actor.start.remote(spec, manifest)
        except BaseException:
            _kill(actor)
            raise
        finally:
            if manifest is not None:
                self._unship(spec.model_data)
        instance = RayInstance(name, actor, host, port, pid, node, spec.log_path)
        instance.watch = asyncio.get_running_loop().create_task(self._watch(instance))
        return instance

    async def _ship(self, folder: Path) -> Manifest:
        """The model folder in the object store, packed once for the launches at hand."""
        async with self._packing:
            manifest, users = self._shipped.get(folder, (None, 0))
            if manifest is None:
                started = time.monotonic()
                manifest = await asyncio.to_thread(_pack, folder)
                log.info(
                    "shipping %s through Ray's object store (%d files, packed in %.1f s)",
                    folder,
                    len(manifest),
                    time.monotonic() - started,
                )
            self._shipped[folder] = (manifest, users + 1)
            return manifest

    def _unship(self, folder: Path) -> None:
        """One launch is done with the shipped folder; the last lets the store free it."""
        manifest, users = self._shipped.pop(folder)
        if users > 1:
            self._shipped[folder] = (manifest, users - 1)

    async def _watch(self, instance: RayInstance) -> None:
        from ray.exceptions import ActorDiedError, RayError

        unsure = False
        while True:
            try:
                code, chunk, end = await instance.actor.poll.remote(instance.received)
            except ActorDiedError:  # the actor, or its node, is gone
                instance.gone()
                return
            except RayError as error:
                # Ray cannot answer now (its head or the network): the instance keeps
                # serving; its /ping health checks go on, and say if it stops.
                if not unsure:
                    log.warning(
                        "cannot ask Ray about instance %s (%s); relying on its health checks",
                        instance.name,
                        type(error).__name__,
                    )
                unsure = True
                await asyncio.sleep(_POLL_INTERVAL * 5)
                continue
            if unsure:
                log.info("Ray answers about instance %s again", instance.name)
                unsure = False
            await instance.keep_log(chunk, end)
            if code is not None:
                instance.gone(code)
                return
            await asyncio.sleep(_POLL_INTERVAL)

    async def stop(self, instance: Any) -> None:
        """Stop the model server, then the actor."""
        from ray.exceptions import RayError

        assert isinstance(instance, RayInstance)
        if instance.watch is not None:
            instance.watch.cancel()
        try:
            rest = await instance.actor.stop.remote(self.stop_timeout, instance.received)
            await instance.keep_log(rest)
        except RayError:
            pass  # gone with its node: its model server went with it
        _kill(instance.actor)
        instance.gone()

    def find(self, record: InstanceRecord) -> RayInstance | None:
        """The recorded actor, if it still lives and its model server still runs."""
        from ray.exceptions import RayError

        import ray

        name = record.detail.get("ray_actor")
        if not name:
            return None
        try:
            actor = ray.get_actor(name, namespace=self.namespace)
            host, port, pid, secret_hash, code = ray.get(actor.describe.remote(), timeout=30)
        except (ValueError, RayError):
            return None
        if code is not None or port != record.port:
            return None
        kept = record.detail.get("log")
        instance = RayInstance(name, actor, host, port, pid, log_path=Path(kept) if kept else None)
        instance.secret_hash = secret_hash
        if self._loop is not None:
            instance.watch = asyncio.run_coroutine_threadsafe(self._watch(instance), self._loop)
        return instance

    def holds_secret(self, instance: Any, secret: str) -> bool:
        """Whether the actor started its model server with this secret."""
        return isinstance(instance, RayInstance) and instance.secret_hash == _hash(secret)

    def unrecorded(self, records: Collection[InstanceRecord]) -> list[Any]:
        """This state's actors that no record names."""
        from ray.exceptions import RayError

        import ray

        known = {r.detail.get("ray_actor") for r in records}
        strays = []
        named = ray.util.list_named_actors(all_namespaces=True)
        for name in [a["name"] for a in named if a["namespace"] == self.namespace]:
            if name in known:
                continue
            try:
                actor = ray.get_actor(name, namespace=self.namespace)
            except ValueError:
                continue
            host, port, pid = "", 0, None
            try:
                host, port, pid, _, _ = ray.get(actor.describe.remote(), timeout=30)
            except RayError:
                pass
            strays.append(RayInstance(name, actor, host, port, pid))
        return strays


def _reachable(address: str, timeout: float) -> None:
    """`RayUnavailable` unless something accepts connections at a host:port address
    (`auto` is Ray's own lookup of this machine's cluster, which fails at once)."""
    if address == "auto":
        return
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise RayUnavailable(f"--ray-address {address!r} is not auto, host:port or ray://host:port")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=min(timeout, 5)).close()
    except OSError as exc:
        raise RayUnavailable(
            f"cannot reach the Ray cluster at {address}: {exc.strerror or exc} (is its head "
            "running? `ray start --head` starts one)"
        ) from None


def connect(address: str, namespace: str, timeout: float = 30.0) -> None:
    """Join the Ray cluster at `address` in `namespace`; `RayUnavailable` in one line."""
    try:
        import ray
    except ImportError:
        raise RayUnavailable(
            "--provisioner ray needs Ray in the gateway's Python: pip install 'streamhost[ray]'"
        ) from None
    if ray.is_initialized():
        return
    started = time.monotonic()
    _reachable(address, timeout)  # ray.init itself waits minutes on an address nobody serves
    try:
        ray.init(
            address=address,
            namespace=namespace,
            log_to_driver=False,
            logging_level=logging.WARNING,
            configure_logging=False,
        )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        detail = " ".join(str(exc).split())[:300]
        raise RayUnavailable(f"cannot join the Ray cluster at {address}: {detail}") from None
    log.info(
        "joined the Ray cluster at %s in %.1f s (namespace %s, %s CPUs, %s GPUs)",
        address,
        time.monotonic() - started,
        namespace,
        math.floor(ray.cluster_resources().get("CPU", 0)),
        math.floor(ray.cluster_resources().get("GPU", 0)),
    )
