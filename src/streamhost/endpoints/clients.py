"""The gateway the terminal commands and the UI talk to: where it is, and boto3 clients for it.

The address comes from ``--gateway``, else ``STREAMHOST_GATEWAY_URL``, else
``http://127.0.0.1:8080``; credentials from ``~/.config/streamhost/credentials``, else
boto3's usual chain (``AWS_ACCESS_KEY_ID``, ...), as :mod:`streamhost.client` reads them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from streamhost.client.boto import gateway_client, runtime_client, sagemaker_client

__all__ = [
    "DEFAULT_ENDPOINT",
    "DEFAULT_GATEWAY_URL",
    "ENDPOINT_ENV",
    "GATEWAY_URL_ENV",
    "REGION",
    "autoscaling_client",
    "cloudwatch_client",
    "control_client",
    "default_gateway_url",
    "invocation_client",
]

DEFAULT_GATEWAY_URL = "http://127.0.0.1:8080"
DEFAULT_ENDPOINT = "default"
GATEWAY_URL_ENV = "STREAMHOST_GATEWAY_URL"
ENDPOINT_ENV = "STREAMHOST_ENDPOINT"
REGION = "us-east-1"


def _config(read_timeout: float, attempts: int) -> Any:
    """A gateway that is down should say so at once, not after botocore's backoff; a model
    may think for a while before its first token, bounded by the gateway's own idle limit.
    (botocore is imported here, when a client is made: `streamhost up` imports this module
    before it starts the gateway.)"""
    from botocore.config import Config

    return Config(
        connect_timeout=3, read_timeout=read_timeout, retries={"total_max_attempts": attempts}
    )


def default_gateway_url(environ: Mapping[str, str] | None = None) -> str:
    """``STREAMHOST_GATEWAY_URL`` if set, else ``http://127.0.0.1:8080``."""
    env = os.environ if environ is None else environ
    return (env.get(GATEWAY_URL_ENV, "").strip() or DEFAULT_GATEWAY_URL).rstrip("/")


def control_client(gateway_url: str, credentials: Mapping[str, str] | None = None) -> Any:
    """A boto3 ``sagemaker`` client for the gateway (fails fast when it is down)."""
    return sagemaker_client(
        gateway_url, region=REGION, credentials=credentials, config=_config(30, 2)
    )


def invocation_client(gateway_url: str, credentials: Mapping[str, str] | None = None) -> Any:
    """A boto3 ``sagemaker-runtime`` client for the gateway, without retries: a retried
    invocation would run the model twice."""
    return runtime_client(
        gateway_url, region=REGION, credentials=credentials, config=_config(120, 1)
    )


def cloudwatch_client(gateway_url: str, credentials: Mapping[str, str] | None = None) -> Any:
    """A boto3 ``cloudwatch`` client for the gateway's endpoint metrics."""
    return gateway_client("cloudwatch", gateway_url, REGION, credentials, config=_config(30, 2))


def autoscaling_client(gateway_url: str, credentials: Mapping[str, str] | None = None) -> Any:
    """A boto3 ``application-autoscaling`` client for the gateway's scaling activities."""
    return gateway_client(
        "application-autoscaling", gateway_url, REGION, credentials, config=_config(30, 2)
    )
