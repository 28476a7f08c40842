"""boto3 clients pointed at a streamhost gateway instead of AWS.

boto3 is imported when a client is built, so importing :mod:`streamhost.client` stays cheap.
Every client gets a session of its own (so each resolves credentials as boto3 would, at the
time it is built), sharing one loader of botocore's service models: parsing a model's JSON
is most of what building a client costs (sagemaker's: ~120 ms of CPU; ~20 ms shared).
"""

from __future__ import annotations

import configparser
import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "boto3_session",
    "credentials_file",
    "gateway_client",
    "load_credentials",
    "runtime_client",
    "sagemaker_client",
]

_KEYS = ("aws_access_key_id", "aws_secret_access_key", "aws_session_token")


def credentials_file() -> Path:
    """Where streamhost keeps the gateway's credentials: ``~/.config/streamhost/credentials``."""
    return Path.home() / ".config" / "streamhost" / "credentials"


def load_credentials(
    path: str | Path | None = None, profile: str = "default"
) -> dict[str, str] | None:
    """Read a profile of an AWS shared-credentials (ini) file; ``None`` if it or a key is absent."""
    path = Path(path) if path is not None else credentials_file()
    if not path.is_file():
        return None
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(path, encoding="utf-8")
    if not parser.has_section(profile):
        return None
    section = parser[profile]
    found = {key: section[key].strip() for key in _KEYS if section.get(key, "").strip()}
    if "aws_access_key_id" not in found or "aws_secret_access_key" not in found:
        return None
    return found


@functools.cache
def _service_models() -> Any:
    import botocore.session

    return botocore.session.get_session().get_component("data_loader")


def boto3_session(**kwargs: Any) -> Any:
    """A new boto3 session (``boto3.session.Session(**kwargs)``) whose service models come
    from the process's one loader: the model files are read and parsed once."""
    import boto3
    import botocore.session

    botocore_session = botocore.session.get_session()
    botocore_session.register_component("data_loader", _service_models())
    return boto3.session.Session(botocore_session=botocore_session, **kwargs)


def gateway_client(
    service: str,
    gateway_url: str,
    region: str = "us-east-1",
    credentials: Mapping[str, str] | None = None,
    **client_kwargs: Any,
) -> Any:
    """A boto3 client of any service the gateway serves (``cloudwatch``,
    ``application-autoscaling``, …), with the credentials `sagemaker_client` uses."""
    if credentials is None:
        # No streamhost file: fall through to boto3's own chain (env vars, ~/.aws, ...).
        credentials = load_credentials() or {}
    unknown = set(credentials) - set(_KEYS)
    if unknown:
        raise ValueError(f"unknown credential keys {sorted(unknown)}; expected {list(_KEYS)}")
    return boto3_session().client(
        service,
        endpoint_url=gateway_url,
        region_name=region,
        **dict(credentials),
        **client_kwargs,
    )


def sagemaker_client(
    gateway_url: str,
    region: str = "us-east-1",
    credentials: Mapping[str, str] | None = None,
    **client_kwargs: Any,
) -> Any:
    """A boto3 ``sagemaker`` (control-plane) client for the gateway at ``gateway_url``.

    ``credentials`` maps ``aws_access_key_id``/``aws_secret_access_key``/``aws_session_token``.
    """
    return gateway_client("sagemaker", gateway_url, region, credentials, **client_kwargs)


def runtime_client(
    gateway_url: str,
    region: str = "us-east-1",
    credentials: Mapping[str, str] | None = None,
    **client_kwargs: Any,
) -> Any:
    """A boto3 ``sagemaker-runtime`` client (``invoke_endpoint[_with_response_stream]``) for it.

    Credentials default to ``~/.config/streamhost/credentials``, then boto3's usual chain.
    """
    return gateway_client("sagemaker-runtime", gateway_url, region, credentials, **client_kwargs)
