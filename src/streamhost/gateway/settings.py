"""The gateway's settings, parsed and checked once at startup.

`build_settings` turns command-line values and the environment into a `GatewaySettings`,
or raises `SettingsError` with one line that says what to change. The security rules live
here: requests must be SigV4-signed whenever credentials are known (`--credentials FILE`,
`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, or streamhost's own credentials file);
serving without authentication is allowed on a loopback address only, unless the
operator says `--insecure`.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .sigv4 import CredentialStore

# This module imports no other part of the gateway, nor SQLAlchemy or botocore, unless asked
# for a database URL or credentials: `streamhost up` reads where the state lives from here
# before it starts the gateway, and each import would delay that start.

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "GatewaySettings",
    "SettingsError",
    "build_settings",
    "default_state_dir",
    "is_loopback",
    "sqlite_url",
    "state_dir_for",
]

# botocore `sagemaker-runtime` shape BodyBlob: the request body limit of both operations.
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024


class SettingsError(Exception):
    """The settings cannot work; the message is one line for the user."""


@dataclass(frozen=True)
class GatewaySettings:
    """Everything the gateway needs, validated (durations in seconds)."""

    host: str = "127.0.0.1"
    port: int = 8080
    state_url: str = "sqlite://"  # any SQLAlchemy URL
    state_dir: Path = field(default_factory=lambda: default_state_dir({}))
    credentials: CredentialStore | None = None  # None: requests are not authenticated
    region: str = "us-east-1"
    account: str = "123456789012"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # The HTTP/2 listener (TLS with ALPN, as AWS's bidirectional-streaming clients need):
    # on with a certificate; None: off.
    http2_port: int | None = None
    stream_timeout: float = 600.0
    idle_timeout: float = 60.0
    invoke_timeout: float = 60.0
    request_timeout: float = 60.0  # for a client to send a request whole
    max_payload: int = MAX_PAYLOAD_BYTES
    keep_instances: bool = False  # leave instances running at exit, for the next gateway
    # Restored before the others at start (they wait for it, not competing for the cores).
    first_endpoint: str | None = None
    # The environment instances inherit (the gateway's own, captured once), and the
    # Python that runs them (another virtualenv's, e.g. one with a CUDA build of torch).
    instance_environment: Mapping[str, str] = field(default_factory=dict)
    instance_python: str = sys.executable
    # Provisioner timings; the defaults are SageMaker's where it has one.
    startup_timeout: float = 600.0
    health_interval: float = 2.0
    drain_timeout: float = 30.0
    stop_timeout: float = 30.0
    # Where instances run: "local" processes, or "ray" actors on the cluster at
    # `ray_address` ("auto": this machine's cluster), with CPU and memory requests scaled by
    # `ray_resource_scale` (for clusters smaller than the instance types asked for).
    provisioner: str = "local"
    ray_address: str | None = None
    ray_resource_scale: float = 1.0
    ray_placement_timeout: float = 180.0  # an instance the cluster cannot place fails then
    # Ship model files through Ray's object store to every instance, not only to nodes
    # that cannot see the gateway's state folder.
    ray_ship_models: bool = False
    # GET /metrics (Prometheus) without a signature also off loopback addresses.
    metrics_unsigned: bool = False
    # Multiplies the autoscaler's metric periods, evaluation window and cooldowns (0 < F ≤ 1;
    # 1 is Application Auto Scaling's timing), so that tests and demos scale in seconds.
    autoscaling_time_scale: float = 1.0

    @property
    def auth_enabled(self) -> bool:
        """Whether every request must carry a valid SigV4 signature."""
        return self.credentials is not None

    @property
    def url(self) -> str:
        """The gateway's base URL."""
        scheme = "https" if self.tls_cert else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    @property
    def http2_url(self) -> str | None:
        """The HTTP/2 listener's base URL (None: it is off)."""
        if self.http2_port is None:
            return None
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.http2_port}"


def default_state_dir(environ: Mapping[str, str]) -> Path:
    """`$XDG_STATE_HOME/streamhost`, else `~/.local/state/streamhost`."""
    base = environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base).expanduser() / "streamhost"


def state_dir_for(state: str | None, environ: Mapping[str, str]) -> tuple[str, Path]:
    """(SQLAlchemy URL, folder for instance logs and model data) of a `--state` value:
    a URL, or a path to a SQLite file; the folder is the file's, or the default one."""
    if not state:
        folder = default_state_dir(environ)
        return sqlite_url(folder / "gateway.db"), folder
    if "://" not in state:
        path = Path(state).expanduser()
        return sqlite_url(path), path.resolve().parent
    import sqlalchemy as sa

    try:
        url = sa.make_url(state)
    except sa.exc.ArgumentError:
        raise SettingsError(f"--state {state!r} is neither a database URL nor a path") from None
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return state, Path(url.database).expanduser().resolve().parent
    return state, default_state_dir(environ)


def is_loopback(host: str) -> bool:
    """Whether `host` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def build_settings(
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    state: str | None = None,
    state_dir: str | None = None,
    credentials: str | None = None,
    region: str = "us-east-1",
    account: str = "123456789012",
    tls_cert: str | None = None,
    tls_key: str | None = None,
    http2_port: int = 8443,
    no_auth: bool = False,
    insecure: bool = False,
    stream_timeout: float = 600.0,
    idle_timeout: float = 60.0,
    request_timeout: float = 60.0,
    keep_instances: bool = False,
    first_endpoint: str | None = None,
    provisioner: str = "local",
    ray_address: str | None = None,
    ray_resource_scale: float = 1.0,
    ray_placement_timeout: float = 180.0,
    ray_ship_models: bool = False,
    metrics_unsigned: bool = False,
    autoscaling_time_scale: float = 1.0,
    environ: Mapping[str, str] | None = None,
) -> GatewaySettings:
    """Check and combine the gateway's options; `SettingsError` says what is wrong."""
    env = dict(os.environ if environ is None else environ)
    if not 0 <= port <= 65535:
        raise SettingsError(f"--port must be between 0 and 65535, got {port}")
    if not (len(account) == 12 and account.isdigit()):
        raise SettingsError(f"--account must be 12 digits, got {account!r}")
    if not region or not all(c.isalnum() or c == "-" for c in region):
        raise SettingsError(f"--region {region!r} is not a region name")
    for name, value in (
        ("--stream-timeout", stream_timeout),
        ("--idle-timeout", idle_timeout),
        ("--request-timeout", request_timeout),
    ):
        if value <= 0:
            raise SettingsError(f"{name} must be positive, got {value:g}")
    if bool(tls_cert) != bool(tls_key):
        raise SettingsError("--tls-cert and --tls-key go together: give both or neither")
    if not 0 <= http2_port <= 65535:
        raise SettingsError(f"--http2-port must be between 0 and 65535, got {http2_port}")
    for name, value in (("--tls-cert", tls_cert), ("--tls-key", tls_key)):
        if value and not Path(value).expanduser().is_file():
            raise SettingsError(f"{name} {value} is not a file")
    if provisioner not in ("local", "ray"):
        raise SettingsError(f"--provisioner must be local or ray, got {provisioner!r}")
    if ray_address and provisioner != "ray":
        raise SettingsError("--ray-address goes with --provisioner ray")
    if ray_ship_models and provisioner != "ray":
        raise SettingsError("--ray-ship-models goes with --provisioner ray")
    if ray_placement_timeout <= 0:
        raise SettingsError(
            f"--ray-placement-timeout must be positive, got {ray_placement_timeout:g}"
        )
    if not 0 < autoscaling_time_scale <= 1:
        raise SettingsError(
            f"--autoscaling-time-scale must be in (0, 1], got {autoscaling_time_scale:g}"
        )
    if not 0 < ray_resource_scale <= 1:
        raise SettingsError(f"--ray-resource-scale must be in (0, 1], got {ray_resource_scale:g}")
    url, folder = state_dir_for(state, env)
    if state_dir:
        folder = Path(state_dir).expanduser().resolve()
    loopback = is_loopback(host)
    store = None if no_auth else _credentials(credentials, env)
    if no_auth and not loopback and not insecure:
        raise SettingsError(
            f"--no-auth is only allowed on a loopback address, not {host}; "
            "add --insecure to serve unauthenticated requests from the network"
        )
    if store is None and not loopback and not insecure:
        raise SettingsError(
            f"refusing to serve {host} without credentials: pass --credentials FILE or set "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or add --insecure)"
        )
    return GatewaySettings(
        host=host,
        port=port,
        state_url=url,
        state_dir=folder,
        credentials=store,
        region=region,
        account=account,
        tls_cert=Path(tls_cert).expanduser() if tls_cert else None,
        tls_key=Path(tls_key).expanduser() if tls_key else None,
        http2_port=http2_port if tls_cert else None,
        stream_timeout=stream_timeout,
        idle_timeout=idle_timeout,
        request_timeout=request_timeout,
        keep_instances=keep_instances,
        first_endpoint=first_endpoint,
        instance_environment=env,
        provisioner=provisioner,
        ray_address=ray_address,
        ray_resource_scale=ray_resource_scale,
        ray_placement_timeout=ray_placement_timeout,
        ray_ship_models=ray_ship_models,
        metrics_unsigned=metrics_unsigned,
        autoscaling_time_scale=autoscaling_time_scale,
    )


def sqlite_url(path: str | Path) -> str:
    """The SQLAlchemy URL of a SQLite file."""
    return f"sqlite:///{Path(path).expanduser().resolve()}"


def _credentials(path: str | None, env: Mapping[str, str]) -> CredentialStore | None:
    from .sigv4 import (
        BotocoreUnsupported,
        CredentialConflict,
        CredentialsFileError,
        CredentialStore,
    )

    try:
        if path:
            return CredentialStore.from_shared_credentials_file(Path(path).expanduser())
        key_id = env.get("AWS_ACCESS_KEY_ID", "").strip()
        secret = env.get("AWS_SECRET_ACCESS_KEY", "").strip()
        if key_id and secret:
            store = CredentialStore()
            store.add(key_id, secret, session_token=env.get("AWS_SESSION_TOKEN") or None)
            return store
        own = Path.home() / ".config" / "streamhost" / "credentials"
        if own.is_file():
            return CredentialStore.from_shared_credentials_file(own)
    except (CredentialsFileError, CredentialConflict, BotocoreUnsupported) as error:
        raise SettingsError(str(error)) from None
    return None
