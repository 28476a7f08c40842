"""Where instances run: the launcher protocol, and its local-process implementation.

The fleet manager (`provisioner.FleetManager`) owns the life of an endpoint's instances:
planning, health, replacement, drains, records. An `InstanceLauncher` owns the mechanics of
one place to run them: start a model server for a `LaunchSpec` and say where it listens,
tell whether it still runs, stop it, find it again from its store record after a gateway
restart, and reap the model servers a dead gateway started without recording them.

`LocalProcessLauncher` runs each instance as `python -m streamhost.cli serve-model` on a
free loopback port, in its own process group (signals reach everything it started), with
its stdout and stderr in the instance's log file. Stopping is SIGTERM to the group, then
SIGKILL after the stop timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import psutil

from streamhost.ports import free_port
from streamhost.processes import own_group, signal_group, stop_process_async

from .store import InstanceRecord

__all__ = ["InstanceLauncher", "LaunchSpec", "Launched", "LocalProcess", "LocalProcessLauncher"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LaunchSpec:
    """One instance to start: what it serves, with what, and where its log goes."""

    instance_id: str
    endpoint: str
    deployment_id: str
    instance_type: str | None  # the variant's InstanceType (None: serverless)
    api: str  # the personality: serve-model's --api
    model_data: Path  # the model's data as the gateway materialised it (/opt/ml/model)
    model_root: Path  # the folder the model server loads: model_data or a folder in it
    environment: dict[str, str]  # the container's, the gateway's and the instance secret
    log_path: Path
    banner: str  # the log's first line for this start


class Launched(Protocol):
    """A started instance, as its launcher reports it."""

    pid: int | None
    host: str
    port: int

    def alive(self) -> bool: ...
    def returncode(self) -> int | None: ...
    def detail(self) -> dict[str, Any]: ...


@runtime_checkable
class InstanceLauncher(Protocol):
    """Starts, finds and stops model servers in one kind of place."""

    async def launch(self, spec: LaunchSpec) -> Launched:
        """Start the instance; return once its process exists (not yet healthy)."""
        ...

    async def stop(self, instance: Launched) -> None:
        """Stop it and everything it started; a no-op if it is gone."""
        ...

    def find(self, record: InstanceRecord) -> Launched | None:
        """The running instance a store record describes, or None if it is gone."""
        ...

    def holds_secret(self, instance: Launched, secret: str) -> bool:
        """Whether the instance was started with this secret (adoption after a restart)."""
        ...

    def unrecorded(self, records: Collection[InstanceRecord]) -> list[Launched]:
        """Model servers of this gateway's that no record names (a crash between a start
        and its record)."""
        ...


class LocalProcessLauncher:
    """Instances as model-server processes on this machine."""

    def __init__(self, python: str, host: str, stop_timeout: float, endpoints_root: Path) -> None:
        self.python = python
        self.host = host
        self.stop_timeout = stop_timeout
        self.endpoints_root = endpoints_root  # model folders live under it: for reaping

    async def launch(self, spec: LaunchSpec) -> LocalProcess:
        """`serve-model` on a free port, in its own process group."""
        port = free_port(self.host)
        popen = await asyncio.to_thread(start_model_server, spec, self.python, self.host, port)
        return LocalProcess(popen.pid, _create_time(popen.pid), popen, self.host, port)

    async def stop(self, instance: Launched) -> None:
        """SIGTERM to the process group, SIGKILL after the stop timeout."""
        assert isinstance(instance, LocalProcess)
        if not instance.alive():
            return  # never signal a group whose leader is gone: its id may be reused

        def ignored_sigterm() -> None:
            log.warning(
                "pid %d ignored SIGTERM for %gs; killing it", instance.pid, self.stop_timeout
            )

        # The SIGKILL goes to whatever is left of the group, the leader or anything it
        # started (the group id stays reserved while any member lives).
        await stop_process_async(
            instance.alive, instance.signal_group, self.stop_timeout, on_kill=ignored_sigterm
        )

    def find(self, record: InstanceRecord) -> LocalProcess | None:
        """The same process (pid and start time), still a model server on its port."""
        return _recorded_process(record)

    def holds_secret(self, instance: Launched, secret: str) -> bool:
        """Whether the process's environment holds the secret."""
        return instance.pid is not None and _holds_secret(instance.pid, secret)

    def unrecorded(self, records: Collection[InstanceRecord]) -> list[Launched]:
        """Process-group leaders serving a model folder under this gateway's state."""
        known = {r.pid for r in records if r.pid is not None}
        return list(_unrecorded_instances(self.endpoints_root, known))


class LocalProcess:
    """A model-server process: our child (`popen`), or adopted after a gateway restart."""

    def __init__(
        self,
        pid: int,
        create_time: float,
        popen: subprocess.Popen | None,
        host: str = "",
        port: int = 0,
    ) -> None:
        self.pid = pid
        self.host = host
        self.port = port
        self.create_time = create_time
        self.popen = popen
        # An adopted process may still be our child (a gateway restarted in-process); then
        # only waitpid can tell its exit apart from a zombie, and must collect it.
        self._child = popen is None and _parent_of(pid) == os.getpid()
        self._exited = False

    def alive(self) -> bool:
        """Whether the process is still running; collects its exit status if it is ours."""
        if self.popen is not None:
            return self.popen.poll() is None
        if self._exited:
            return False
        if self._child:
            try:
                pid, _ = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                pid = self.pid  # already collected
            self._exited = pid == self.pid
            return not self._exited
        try:
            process = psutil.Process(self.pid)
            if abs(process.create_time() - self.create_time) > 0.01:
                self._exited = True  # the pid was reused by another process
            elif process.status() == psutil.STATUS_ZOMBIE:
                self._exited = True  # its parent (not us) collects it
        except psutil.Error:
            self._exited = True
        return not self._exited

    def returncode(self) -> int | None:
        """The exit status, when known."""
        return None if self.popen is None else self.popen.poll()

    def detail(self) -> dict[str, Any]:
        """What the instance's store record keeps to find this process again."""
        return {"create_time": self.create_time}

    def signal_group(self, signum: int) -> None:
        """Signal the whole process group (the model server and anything it started)."""
        signal_group(self.pid, signum)


def _parent_of(pid: int) -> int | None:
    try:
        return psutil.Process(pid).ppid()
    except psutil.Error:
        return None


def start_model_server(
    spec: LaunchSpec,
    python: str,
    host: str,
    port: int,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.Popen:
    """`python -m streamhost.cli serve-model` for `spec` on host:port, in its own process
    group, its output appended to the instance's log after the banner (every launcher's)."""
    argv = [
        *[python, "-m", "streamhost.cli", "serve-model"],
        *["--model-dir", str(spec.model_root), "--port", str(port)],
        *["--host", host, "--api", spec.api],
    ]
    env = {**spec.environment, "SAGEMAKER_BIND_TO_PORT": str(port)}
    spec.log_path.parent.mkdir(parents=True, exist_ok=True)
    with spec.log_path.open("ab") as log_file:
        log_file.write(spec.banner.encode())
        log_file.flush()
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=spec.model_root,
            close_fds=True,
            # Signals reach all of it, and a Ctrl-C meant for the gateway does not kill
            # instances mid-shutdown.
            **own_group(preexec_fn),
        )


def _create_time(pid: int) -> float:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return 0.0


def _recorded_process(record: InstanceRecord) -> LocalProcess | None:
    """The live process a store record describes, or None if it is gone or not ours."""
    if record.pid is None:
        return None
    try:
        process = psutil.Process(record.pid)
        create_time = process.create_time()
        expected = record.detail.get("create_time")
        if expected is not None and abs(create_time - float(expected)) > 0.01:
            return None  # the pid now belongs to another process
        if process.status() == psutil.STATUS_ZOMBIE:
            if process.ppid() == os.getpid():
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(record.pid, os.WNOHANG)  # ours (an in-process restart)
            return None
        cmdline = process.cmdline()
    except psutil.Error:
        return None
    if "serve-model" not in cmdline or str(record.port) not in cmdline:
        return None
    return LocalProcess(record.pid, create_time, None, record.host, record.port or 0)


def _unrecorded_instances(root: Path, known: Collection[int]) -> list[LocalProcess]:
    """Model servers whose model folder is under `root` and whose pid is not in `known`
    (only process-group leaders, as the provisioner starts them)."""
    root = root.resolve()
    found = []
    for process in psutil.process_iter(["cmdline", "create_time"]):
        cmdline = process.info["cmdline"] or []
        if process.pid in known or "serve-model" not in cmdline or "--model-dir" not in cmdline:
            continue
        at = cmdline.index("--model-dir") + 1
        if at >= len(cmdline) or not Path(cmdline[at]).resolve().is_relative_to(root):
            continue
        with contextlib.suppress(OSError):
            if os.getpgid(process.pid) == process.pid:
                found.append(LocalProcess(process.pid, process.info["create_time"], None))
    return found


def _holds_secret(pid: int, secret: str) -> bool:
    try:
        return psutil.Process(pid).environ().get("STREAMHOST_INSTANCE_SECRET") == secret
    except psutil.Error:
        return False
