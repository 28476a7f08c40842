"""``streamhost deploy`` and ``endpoints delete``, done as a SageMaker SDK user does them.

A model, an endpoint config and an endpoint are created with boto3 (for the LMI API, with a
model archive holding the ``serving.properties`` the container loads), the endpoint is
waited on with a spinner (plain progress lines when the output is not a terminal), and
deleting it deletes what was made for it. ``switch_model`` moves an endpoint that serves to
another model blue/green (UpdateEndpoint): the old model serves until the new one is
healthy, and keeps serving if it never is.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import tarfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from streamhost.command import CommandError
from streamhost.endpoints.discovery import IN_SERVICE, EndpointInfo, describe_endpoint
from streamhost.endpoints.errors import error_code, logs_hint, not_in_service, short_reason

__all__ = [
    "DEFAULT_INSTANCE_TYPE",
    "EXECUTION_ROLE",
    "LMI_IMAGE",
    "TGI_IMAGE",
    "DeploySpec",
    "delete_endpoint",
    "deploy",
    "lmi_model_archive",
    "model_data_dir",
    "model_reference",
    "switch_model",
    "wait_for_endpoint",
]

TGI_IMAGE = (
    "763104351884.dkr.ecr.us-east-1.amazonaws.com/"
    "huggingface-pytorch-tgi-inference:2.1-tgi2.0-gpu-py310-cu121-ubuntu22.04"
)
LMI_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/djl-inference:0.23.0-deepspeed0.9.5-cu118"
EXECUTION_ROLE = "arn:aws:iam::123456789012:role/service-role/streamhost"
DEFAULT_INSTANCE_TYPE = "ml.g5.2xlarge"
_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_POLL_SECONDS = 0.5
# The statuses of an endpoint being created or changed: SageMaker refuses to update or delete
# it until it leaves them.
_IN_PROGRESS = ("Creating", "Updating", "SystemUpdating")
_DELETING = "Deleting"
# The error codes of a describe call for an endpoint that does not exist.
_NOT_FOUND = ("ValidationException", "ValidationError", "ResourceNotFound")
_QUIET_PROGRESS_SECONDS = 30.0  # piped output repeats an unchanged progress line this often


@dataclass(frozen=True)
class DeploySpec:
    """What ``streamhost deploy`` creates: one model behind one endpoint."""

    name: str
    model: str = "tiny"
    api: str = "tgi"
    instances: int = 1
    instance_type: str = DEFAULT_INSTANCE_TYPE


def model_data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where ``deploy --api lmi`` keeps model archives: ``$XDG_DATA_HOME/streamhost/model-data``."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base).expanduser() / "streamhost" / "model-data"


def model_reference(model: str) -> str:
    """A local folder as an absolute path (instances do not run in our working directory)."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


def lmi_model_archive(model: str, path: Path) -> Path:
    """Write the ``.tar.gz`` an LMI container loads: a ``serving.properties`` naming ``model``,
    streaming JSON lines as the SageMaker streaming blog configures it."""
    properties = (
        "engine=Python\n"
        f"option.model_id={model_reference(model)}\n"
        "option.rolling_batch=auto\n"
        "option.output_formatter=jsonlines\n"
        "option.enable_streaming=true\n"
    ).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        info = tarfile.TarInfo("serving.properties")
        info.size = len(properties)
        info.mode = 0o644
        info.mtime = int(time.time())
        archive.addfile(info, io.BytesIO(properties))
    return path


def _exists(sm: Any, name: str) -> bool:
    try:
        sm.describe_endpoint(EndpointName=name)
    except ClientError as error:
        if error_code(error) in _NOT_FOUND:
            return False
        raise
    return True


def deploy(
    sm: Any,
    spec: DeploySpec,
    *,
    wait: bool = True,
    console: Console | None = None,
    data_dir: Path | None = None,
) -> EndpointInfo:
    """Create the model, endpoint config and endpoint of ``spec``; wait for InService if asked.

    Model and config are named ``<name>-<timestamp>`` as the SageMaker SDK names them, so a
    redeploy after ``endpoints delete`` never collides with what is left.
    """
    _check_new(sm, spec)
    resource = _resource_name(spec.name)
    container, archive = _container(spec, resource, data_dir)
    try:
        _create(sm, spec, resource, container)
    except Exception:
        if archive is not None:
            archive.unlink(missing_ok=True)
        raise
    if not wait:
        return describe_endpoint(sm, spec.name)
    return wait_for_endpoint(sm, spec.name, console=console)


def switch_model(
    sm: Any, spec: DeploySpec, *, console: Console | None = None, data_dir: Path | None = None
) -> EndpointInfo:
    """Move the InService endpoint ``spec.name`` to ``spec``'s model blue/green: a new model
    and config, UpdateEndpoint, wait. Once it serves, what the old deployment was made of is
    deleted. If it fails, the endpoint keeps its old model, what was made for the new one
    is deleted, and ``CommandError`` says the cause (`short_reason`)."""
    old = describe_endpoint(sm, spec.name)
    resource = _resource_name(spec.name)
    container, archive = _container(spec, resource, data_dir)
    made = _created(sm, spec, resource, container, archive)
    try:
        sm.update_endpoint(EndpointName=spec.name, EndpointConfigName=resource)
        info = wait_for_endpoint(sm, spec.name, console=console)
    except BaseException:
        _undo(made)
        raise
    if info.config_name != resource:  # rolled back: the old deployment still serves
        _undo(made)
        raise CommandError(short_reason(info.failure_reason or "the update was rolled back"))
    _delete_resources(sm, old, data_dir)
    return info


def _resource_name(endpoint: str) -> str:
    """``<endpoint>-<timestamp>``, as the SageMaker SDK names a model or config."""
    stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{int(time.time() * 1000) % 1000:03d}"
    return f"{endpoint[: 62 - len(stamp)]}-{stamp}"


def _check_new(sm: Any, spec: DeploySpec) -> None:
    """``CommandError`` unless ``spec`` names a valid endpoint that does not exist yet."""
    if not _NAME.fullmatch(spec.name):
        raise CommandError(
            f"invalid endpoint name {spec.name!r}: letters, digits and hyphens, at most 63"
        )
    if spec.instances < 1:
        raise CommandError(f"--instances must be at least 1, got {spec.instances}")
    if _exists(sm, spec.name):
        raise CommandError(
            f"endpoint {spec.name} already exists: delete it first with "
            f"`streamhost endpoints delete {spec.name}`"
        )


def _container(
    spec: DeploySpec, resource: str, data_dir: Path | None
) -> tuple[dict[str, Any], Path | None]:
    """The model's container definition for ``spec.api``, and the model archive written for
    it (LMI, in ``data_dir``, default `model_data_dir`), if any."""
    if spec.api == "lmi":
        folder = data_dir or model_data_dir()
        archive = lmi_model_archive(spec.model, folder / f"{resource}.tar.gz")
        return {"Image": LMI_IMAGE, "ModelDataUrl": archive.as_uri()}, archive
    if spec.api == "tgi":
        environment = {"HF_MODEL_ID": model_reference(spec.model)}
        return {"Image": TGI_IMAGE, "Environment": environment}, None
    raise CommandError(f"--api must be tgi or lmi, got {spec.api!r}")


def _create(sm: Any, spec: DeploySpec, resource: str, container: dict[str, Any]) -> None:
    """CreateModel, CreateEndpointConfig, CreateEndpoint; should a step be refused, what the
    steps before it made is deleted again."""
    made = _created(sm, spec, resource, container, None)
    try:
        sm.create_endpoint(EndpointName=spec.name, EndpointConfigName=resource)
    except Exception:
        _undo(made)
        raise


def _created(
    sm: Any, spec: DeploySpec, resource: str, container: dict[str, Any], archive: Path | None
) -> list[Callable[[], Any]]:
    """CreateModel and CreateEndpointConfig named ``resource``; the steps that undo them
    (and remove ``archive``). Should a step be refused, the ones before it are undone."""
    made: list[Callable[[], Any]] = []
    if archive is not None:
        made.append(lambda: archive.unlink(missing_ok=True))
    try:
        sm.create_model(
            ModelName=resource, PrimaryContainer=container, ExecutionRoleArn=EXECUTION_ROLE
        )
        made.append(lambda: sm.delete_model(ModelName=resource))
        sm.create_endpoint_config(
            EndpointConfigName=resource,
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "ModelName": resource,
                    "InstanceType": spec.instance_type,
                    "InitialInstanceCount": spec.instances,
                }
            ],
        )
        made.append(lambda: sm.delete_endpoint_config(EndpointConfigName=resource))
    except Exception:
        _undo(made)
        raise
    return made


def _undo(made: list[Callable[[], Any]]) -> None:
    for undo in reversed(made):
        with contextlib.suppress(Exception):
            undo()


def wait_for_endpoint(
    sm: Any, name: str, *, console: Console | None = None, timeout: float = 1800.0
) -> EndpointInfo:
    """Show progress while ``name`` is Creating or Updating; its final description.

    ``CommandError`` when it fails (the cause of its FailureReason, then where its logs
    are) or takes over ``timeout``.
    """
    info = _settled(sm, name, console or Console(stderr=True), timeout)
    if info.status != IN_SERVICE:
        raise CommandError(
            not_in_service(name, info.status, info.failure_reason or "no reason given")
        )
    return info


def _settled(sm: Any, name: str, console: Console, timeout: float) -> EndpointInfo:
    """``name``'s description once it is no longer being created or changed (`_IN_PROGRESS`),
    its progress shown meanwhile; ``CommandError`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    info = describe_endpoint(sm, name)
    with _progress(console, info) as show:
        while info.status in _IN_PROGRESS:
            if time.monotonic() > deadline:
                raise CommandError(
                    f"endpoint {name} is still {info.status} after {timeout:.0f} s; "
                    f"{logs_hint(name)}"
                )
            time.sleep(_POLL_SECONDS)
            info = describe_endpoint(sm, name)
            show(info)
    return info


@contextlib.contextmanager
def _progress(console: Console, info: EndpointInfo) -> Iterator[Callable[[EndpointInfo], None]]:
    """Show ``info``'s progress line and yield what updates it: a spinner on a terminal
    (gone when done), else a plain line whenever it changes (and every
    `_QUIET_PROGRESS_SECONDS`), so piped output is a log, never a blank line."""
    if console.is_terminal:
        columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task(_progress_line(info), total=None)
            yield lambda info: progress.update(task, description=_progress_line(info))
        return
    started = time.monotonic()
    last = {"line": "", "at": started}

    def show(info: EndpointInfo) -> None:
        line, now = _progress_line(info), time.monotonic()
        if line != last["line"] or now - last["at"] >= _QUIET_PROGRESS_SECONDS:
            console.print(
                f"{line} ({now - started:.0f} s)", markup=False, highlight=False, soft_wrap=True
            )
            last.update(line=line, at=now)

    show(info)
    yield show


def _progress_line(info: EndpointInfo) -> str:
    model = f" · {info.model_id}" if info.model_id else ""
    api = f" ({info.api.upper()})" if info.api != "unknown" else ""
    healthy = info.instances or 0
    wanted = info.desired_instances or healthy
    instances = f" · {healthy}/{wanted} instances healthy" if wanted else ""
    return f"{info.status} endpoint {info.name}{model}{api}{instances}"


def delete_endpoint(
    sm: Any,
    name: str,
    *,
    keep_model: bool = False,
    data_dir: Path | None = None,
    timeout: float = 300.0,
    console: Console | None = None,
) -> None:
    """Delete endpoint ``name``, then (unless ``keep_model``) its config, its models and the
    model archives ``deploy`` wrote for them. An endpoint being created or changed (a
    scaling activity included) is deleted once that is over, its progress shown meanwhile."""
    deadline = time.monotonic() + timeout
    info = describe_endpoint(sm, name)
    while info.status != _DELETING:
        if info.status in _IN_PROGRESS:
            left = max(0.0, deadline - time.monotonic())
            info = _settled(sm, name, console or Console(stderr=True), left)
        try:
            sm.delete_endpoint(EndpointName=name)
            break
        except ClientError:
            info = describe_endpoint(sm, name)
            if info.status not in (*_IN_PROGRESS, _DELETING):
                raise  # refused for another reason than a change that began meanwhile
    while _exists(sm, name):
        if time.monotonic() > deadline:
            raise CommandError(f"endpoint {name} was not deleted within {timeout:.0f} s")
        time.sleep(_POLL_SECONDS)
    if not keep_model:
        _delete_resources(sm, info, data_dir)


def _delete_resources(sm: Any, info: EndpointInfo, data_dir: Path | None) -> None:
    """Delete the config and models an endpoint was described with, and the model archives
    ``deploy`` wrote for them."""
    if info.config_name:
        with contextlib.suppress(ClientError):
            sm.delete_endpoint_config(EndpointConfigName=info.config_name)
    for model in info.model_names:
        with contextlib.suppress(ClientError):
            sm.delete_model(ModelName=model)
    ours = (data_dir or model_data_dir()).resolve()
    if info.model_data_url and info.model_data_url.startswith("file://"):
        archive = Path(info.model_data_url.removeprefix("file://"))
        if archive.parent.resolve() == ours:
            archive.unlink(missing_ok=True)


def ensure_endpoint(sm: Any, spec: DeploySpec, console: Console) -> tuple[str, DeploySpec]:
    """Make endpoint ``spec.name`` serve ``spec``'s model: reuse, wait for, deploy, or switch
    it blue/green; what happened, and what it serves (its old model if the switch failed)."""
    try:
        info = describe_endpoint(sm, spec.name)
    except Exception as error:
        if error_code(error) not in _NOT_FOUND:
            raise
        info = None
    if info is not None:
        if info.status in _IN_PROGRESS:
            try:
                info = wait_for_endpoint(sm, spec.name, console=console)
            except CommandError:
                info = describe_endpoint(sm, spec.name)  # failed: replaced below
        if info.status == IN_SERVICE:
            if info.model_id == model_reference(spec.model) and info.api == spec.api:
                return "reused", spec
            return _switch(sm, spec, info, console)
        # Nothing serves, so nothing is lost by starting afresh.
        console.print(f"Replacing endpoint {spec.name}: it is {info.status}.")
        delete_endpoint(sm, spec.name)
    console.print(
        f"Deploying endpoint {spec.name}: {spec.model} behind the {spec.api.upper()} API."
    )
    deploy(sm, spec, wait=True, console=console)
    return "deployed", spec


def _switch(
    sm: Any, spec: DeploySpec, serving: EndpointInfo, console: Console
) -> tuple[str, DeploySpec]:
    """Move endpoint ``spec.name`` from what it serves to ``spec``'s model blue/green; if the
    new model fails, say why in one line and keep the old one."""
    old = DeploySpec(name=spec.name, model=serving.model_id or "?", api=serving.api)
    console.print(
        f"Starting {spec.model} ({spec.api.upper()} API) beside {old.model} on endpoint "
        f"{spec.name}; {old.model} serves until the new model is healthy."
    )
    try:
        switch_model(sm, spec, console=console)
    except CommandError as error:
        console.print(
            f"streamhost up: endpoint {spec.name} keeps serving {old.model}: {spec.model} did "
            f"not come up: {error}; {logs_hint(spec.name)}",
            style="red",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        return "kept", old
    return "switched", spec
