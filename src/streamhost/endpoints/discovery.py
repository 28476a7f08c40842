"""What the gateway hosts: endpoints, their status, and which API each one speaks.

The API is read the way the gateway chooses it: from the model's container image (TGI
images speak TGI, LMI/DJL images LMI; streamhost's own image speaks LMI when it is given
model data holding a ``serving.properties``, else TGI), through ``describe_endpoint`` →
``describe_endpoint_config`` → ``describe_model``.
"""

from __future__ import annotations

import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlparse

from botocore.exceptions import ClientError

from streamhost.client.images import UnsupportedImage, personality

__all__ = [
    "IN_SERVICE",
    "SERVING",
    "EndpointInfo",
    "api_of_container",
    "describe_endpoint",
    "list_endpoints",
]

IN_SERVICE = "InService"
SERVING = frozenset({IN_SERVICE, "Updating", "SystemUpdating"})
"""The statuses in which an endpoint takes invocations: an update (a new config, a scaling
activity, a restarted gateway bringing its instances back) keeps the running fleet serving
until the new one takes over, as SageMaker's blue/green updates do."""


@dataclass(frozen=True)
class EndpointInfo:
    """One endpoint as the UI and the terminal commands show it."""

    name: str
    status: str
    api: str = "unknown"  # tgi | lmi | unknown
    model_id: str | None = None
    image: str | None = None
    model_names: tuple[str, ...] = ()
    config_name: str | None = None
    instance_type: str | None = None
    instances: int | None = None
    desired_instances: int | None = None
    failure_reason: str | None = None
    created: datetime | None = None
    model_data_url: str | None = None

    @property
    def serving(self) -> bool:
        """Whether the endpoint takes invocations (`SERVING`)."""
        return self.status in SERVING


def api_of_container(container: Mapping[str, Any]) -> str:
    """``tgi``, ``lmi``, ``vllm`` or ``unknown`` for a model's container definition."""
    image = str(container.get("Image") or "")
    try:
        api = personality(image)
    except UnsupportedImage:
        return "unknown"
    if api != "auto":
        return api
    environment = container.get("Environment") or {}
    has_data = container.get("ModelDataUrl") or container.get("ModelDataSource")
    return "lmi" if has_data or any(k.startswith("OPTION_") for k in environment) else "tgi"


def _model_id(container: Mapping[str, Any]) -> str | None:
    environment = container.get("Environment") or {}
    for key in ("HF_MODEL_ID", "OPTION_MODEL_ID", "MODEL_ID"):
        if environment.get(key):
            return str(environment[key])
    url = container.get("ModelDataUrl")
    if not url:
        return None
    return _archived_model_id(url) or url


def _archived_model_id(url: str) -> str | None:
    """``option.model_id`` of the ``serving.properties`` in a local model archive, if any."""
    parsed = urlparse(url)
    if parsed.scheme not in ("", "file") or not url.endswith((".tar.gz", ".tgz")):
        return None
    try:
        with tarfile.open(unquote(parsed.path), "r:gz") as archive:
            for member in archive.getmembers()[:64]:
                if member.isfile() and member.name.rsplit("/", 1)[-1] == "serving.properties":
                    handle = archive.extractfile(member)
                    text = handle.read(65536).decode("utf-8", "replace") if handle else ""
                    for line in text.splitlines():
                        key, _, value = line.partition("=")
                        if key.strip() == "option.model_id" and value.strip():
                            return value.strip()
    except (OSError, tarfile.TarError, EOFError):
        return None
    return None


def _container(model: Mapping[str, Any]) -> Mapping[str, Any]:
    return model.get("PrimaryContainer") or (model.get("Containers") or [{}])[0]


def describe_endpoint(sm: Any, name: str) -> EndpointInfo:
    """Everything known about endpoint ``name``, its API read from its first variant's model.

    Raises botocore's ``ClientError`` if the endpoint does not exist.
    """
    endpoint = sm.describe_endpoint(EndpointName=name)
    config_name = endpoint.get("EndpointConfigName")
    live = (endpoint.get("ProductionVariants") or [{}])[0]
    info: dict[str, Any] = {
        "name": endpoint["EndpointName"],
        "status": endpoint["EndpointStatus"],
        "config_name": config_name,
        "failure_reason": endpoint.get("FailureReason"),
        "created": endpoint.get("CreationTime"),
        "instances": live.get("CurrentInstanceCount"),
        "desired_instances": live.get("DesiredInstanceCount"),
    }
    if config_name:
        info.update(_describe_config(sm, config_name))
    return EndpointInfo(**info)


def _describe_config(sm: Any, config_name: str) -> dict[str, Any]:
    try:
        config = sm.describe_endpoint_config(EndpointConfigName=config_name)
    except ClientError:
        return {}  # deleted under a running endpoint: SageMaker allows that
    variants = config.get("ProductionVariants") or []
    found: dict[str, Any] = {
        "model_names": tuple(v["ModelName"] for v in variants if v.get("ModelName")),
    }
    if not variants:
        return found
    first = variants[0]
    found["instance_type"] = first.get("InstanceType") or (
        "serverless" if first.get("ServerlessConfig") else None
    )
    if found["model_names"]:
        try:
            model = sm.describe_model(ModelName=found["model_names"][0])
        except ClientError:
            return found
        container = _container(model)
        found["api"] = api_of_container(container)
        found["image"] = container.get("Image")
        found["model_id"] = _model_id(container)
        found["model_data_url"] = container.get("ModelDataUrl")
    return found


def list_endpoints(sm: Any) -> list[EndpointInfo]:
    """Every endpoint on the gateway, by name, each described (API included)."""
    names: list[str] = []
    for page in sm.get_paginator("list_endpoints").paginate():
        for summary in page.get("Endpoints", []):
            names.append(summary["EndpointName"])
    infos = []
    for name in sorted(names):
        try:
            infos.append(describe_endpoint(sm, name))
        except ClientError:
            continue  # deleted between the listing and the describe
    return infos
