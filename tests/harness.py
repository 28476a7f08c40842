"""The one test harness: servers on loopback, waiting on them, and the left-over checks.

- `ServerThread`: any ASGI app (or a prepared `uvicorn.Config`) served on a thread of the
  test process, on a port bound before it starts.
- `GatewayThread` and `GatewayProcess`: the gateway in its two test modes — on a thread
  (fast; the tests reach its objects) or as `streamhost gateway` in a child process (for
  tests about processes: killed with SIGKILL, its memory and file descriptors its own).
- `wait_for`, `http_ok`: polling with one signature.
- `model_servers`, `assert_no_model_servers`, `running`, `still_running`, `stop_popen`: what
  a test started must be gone when it ends.
- boto3 clients, signed raw requests and the SageMaker deploy steps the tests share.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import select
import signal
import socket
import ssl
import subprocess
import sys
import tarfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest
import uvicorn
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from streamhost.client.boto import gateway_client
from streamhost.ports import free_port
from streamhost.processes import own_group, stop_leftovers

__all__ = [
    "ACCESS_KEY",
    "ACCOUNT",
    "FAST",
    "LMI_IMAGE",
    "REGION",
    "ROLE",
    "SECRET_KEY",
    "TGI_IMAGE",
    "VLLM_IMAGE",
    "GatewayProcess",
    "GatewayThread",
    "MiB",
    "ModelServerProcess",
    "PeakRss",
    "ServerThread",
    "assert_no_model_servers",
    "client",
    "create_synthetic_endpoint",
    "delete_endpoint",
    "descendants",
    "error_of",
    "examples",
    "exchange",
    "free_port",
    "http_ok",
    "interrupt_popen",
    "model_servers",
    "payload_bytes",
    "read_until_closed",
    "running",
    "running_gateway",
    "send_huge_field",
    "signed_headers",
    "slow_clients",
    "start_model_server",
    "still_running",
    "stop_popen",
    "targz",
    "tgi_body",
    "wait_for",
    "wait_in_service",
    "wait_until_serving",
]

ACCESS_KEY = "AKIDSTREAMHOSTTEST"
SECRET_KEY = "streamhost-test-secret"
REGION = "us-east-1"
ACCOUNT = "123456789012"
ROLE = "arn:aws:iam::123456789012:role/service-role/AmazonSageMaker-ExecutionRole"
TGI_IMAGE = (
    "763104351884.dkr.ecr.us-east-1.amazonaws.com/"
    "huggingface-pytorch-tgi-inference:2.0.1-tgi0.9.3-gpu-py39-cu118-ubuntu20.04"
)
LMI_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/djl-inference:0.23.0-deepspeed0.9.5-cu118"
# AWS's vLLM container for SageMaker (configured by SM_VLLM_* variables).
VLLM_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/vllm:0.11.2-sagemaker-v1.2"
FAST = {"Delay": 0.2, "MaxAttempts": 600}  # boto3 waiter config
# `make check`, the quick tier, sets STREAMHOST_QUICK_TESTS=1 (see `examples`).
QUICK = os.environ.get("STREAMHOST_QUICK_TESTS") == "1"


def examples(count: int) -> int:
    """How many examples a property test tries: `count` in the full suite (`make test`, CI),
    a fifth of it (at least 20) in the quick tier."""
    return max(20, count // 5) if QUICK else count


# -- waiting -----------------------------------------------------------------------------


def wait_for(
    condition: Callable[[], Any],
    timeout: float = 30.0,
    what: str = "condition",
    interval: float = 0.05,
) -> Any:
    """Poll `condition` until it is truthy (its value is returned), failing after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    """Whether GET `url` answers 200 now."""
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return response.status == 200
    except OSError:
        return False


def wait_until_serving(
    url: str, process: subprocess.Popen, timeout: float = 60.0, what: str | None = None
) -> None:
    """Wait for GET `url` to answer 200, failing at once if `process` exits first."""

    def serving() -> bool:
        assert process.poll() is None, f"{what or url}: process exited with {process.returncode}"
        return http_ok(url)

    wait_for(serving, timeout, what or url, interval=0.1)


# -- servers on a thread -----------------------------------------------------------------


class ServerThread:
    """An ASGI app (or a prepared `uvicorn.Config`) served by uvicorn on a thread, on a
    loopback port bound before the server starts (no race for the port)."""

    def __init__(self, app_or_config: Any, bound: socket.socket | None = None) -> None:
        self.socket = bound or _bound_socket()
        self.port: int = self.socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = (
            app_or_config
            if isinstance(app_or_config, uvicorn.Config)
            else uvicorn.Config(app_or_config, log_level="warning", access_log=False)
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True
        )

    @property
    def app(self) -> Any:
        return self.server.config.app

    def start(self, ready_path: str | None = None, timeout: float = 30.0) -> ServerThread:
        """Start serving; with `ready_path`, also wait until GET on it answers 200."""
        self.thread.start()

        def started() -> bool:
            if not self.thread.is_alive():
                raise RuntimeError("server failed to start")
            return self.server.started

        wait_for(started, timeout, "the server to start", interval=0.01)
        if ready_path is not None:
            wait_for(lambda: http_ok(self.url + ready_path), timeout, f"{ready_path} to be 200")
        return self

    def stop(self, timeout: float = 60.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "server did not stop"
        self.socket.close()


def _bound_socket() -> socket.socket:
    bound = socket.socket()
    bound.bind(("127.0.0.1", 0))
    return bound


# -- the gateway, on a thread or as a process ---------------------------------------------


class GatewayThread(ServerThread):
    """The gateway app served on a thread of the test process; it starts real model-server
    processes. Keyword arguments override `GatewaySettings` fields."""

    def __init__(self, state_dir: Path, **overrides: Any) -> None:
        from streamhost.gateway.app import create_gateway_app, server_config
        from streamhost.gateway.settings import GatewaySettings, sqlite_url
        from streamhost.gateway.sigv4 import CredentialStore

        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "state_url": sqlite_url(state_dir / "gateway.db"),
            "state_dir": state_dir,
            "credentials": CredentialStore({ACCESS_KEY: SECRET_KEY}),
            "region": REGION,
            "account": ACCOUNT,
            "instance_environment": dict(os.environ),
            "health_interval": 0.3,
            "stop_timeout": 10.0,
            "drain_timeout": 10.0,
        }
        values.update(overrides)
        bound = _bound_socket()
        values["port"] = bound.getsockname()[1]
        self.settings = GatewaySettings(**values)
        gateway_app = create_gateway_app(self.settings)
        super().__init__(server_config(self.settings, gateway_app, log_level="warning"), bound)

    def sm(self, **config: Any) -> Any:
        return client("sagemaker", self.url, **config)

    def smr(self, **config: Any) -> Any:
        return client("sagemaker-runtime", self.url, **config)

    def cloudwatch(self, **config: Any) -> Any:
        return client("cloudwatch", self.url, **config)

    def autoscaling(self, **config: Any) -> Any:
        return client("application-autoscaling", self.url, **config)


@contextlib.contextmanager
def running_gateway(state_dir: Path, **overrides: Any) -> Iterator[GatewayThread]:
    """A started `GatewayThread`; on leaving, it stops and none of its model servers may be
    left (those of another gateway, a module's shared one, are that one's to check)."""
    live = GatewayThread(state_dir, **overrides).start()
    try:
        yield live
    finally:
        live.stop()
        assert_no_model_servers(state_dir)


class GatewayProcess:
    """`streamhost gateway` as a child process, with a state folder that outlives it.

    With `ca_file` the gateway serves HTTPS (`args` name its certificate) and that CA is
    trusted to reach it. `env` replaces the environment it runs in (AWS_ variables are
    always left out); `credentials` is the shared-credentials file it reads (one holding
    the test key pair is written in the state folder by default); `launcher` is what
    Python runs in place of `-m streamhost.cli` (a `-c` script that calls `cli.main`);
    `python` is the interpreter (its instances start with the same one).
    """

    def __init__(
        self,
        state_dir: Path,
        *args: str,
        ca_file: str | None = None,
        env: dict[str, str] | None = None,
        credentials: Path | None = None,
        launcher: tuple[str, ...] = ("-m", "streamhost.cli"),
        python: str = sys.executable,
    ) -> None:
        self.launcher = launcher
        self.python = python
        self.state_dir = state_dir
        self.args = args
        self.ca_file = ca_file
        self._trust = ssl.create_default_context(cafile=ca_file) if ca_file else None
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.env = {
            k: v
            for k, v in (os.environ if env is None else env).items()
            if not k.startswith("AWS_")
        }
        self.credentials = credentials or state_dir / "credentials"
        if not self.credentials.exists():
            self.credentials.parent.mkdir(parents=True, exist_ok=True)
            self.credentials.write_text(
                f"[default]\naws_access_key_id = {ACCESS_KEY}\n"
                f"aws_secret_access_key = {SECRET_KEY}\n"
            )
        self.db = state_dir / "gateway.db"
        self.log = state_dir / "gateway.log"
        self.port = free_port()
        self.url = f"{'https' if ca_file else 'http'}://127.0.0.1:{self.port}"
        self.popen: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> GatewayProcess:
        argv = [
            *[self.python, *self.launcher, "--log-level", "warning", "gateway"],
            *["--port", str(self.port), "--state", str(self.db)],
            *["--credentials", str(self.credentials), *self.args],
        ]
        with self.log.open("ab") as log:
            self.popen = subprocess.Popen(
                argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

        def serving() -> bool:
            assert self.popen is not None and self.popen.poll() is None, (
                f"gateway exited: {self.log_text()}"
            )
            return http_ok(self.url + "/ping", self._trust)

        wait_for(serving, timeout, "the gateway to serve", interval=0.1)
        return self

    @property
    def home(self) -> Path:
        """The HOME it runs with (where `~/.config/streamhost` is)."""
        return Path(self.env.get("HOME", "~")).expanduser()

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash or an OOM kill."""
        assert self.popen is not None
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(30)

    def stop(self, timeout: float = 90.0) -> list[psutil.Process]:
        """SIGTERM, as systemd or Ctrl-C stops it (its instances are stopped too); returns
        the descendants that outlived it (killed)."""
        if self.popen is None:
            return []
        return stop_popen(self.popen, timeout)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def sm(self, **config: Any) -> Any:
        return client("sagemaker", self.url, verify=self.ca_file, **config)

    def smr(self, **config: Any) -> Any:
        return client("sagemaker-runtime", self.url, verify=self.ca_file, **config)

    def instances(self, endpoint: str | None = None) -> list[Any]:
        """The store's instance records (read beside the running gateway: SQLite WAL)."""
        from streamhost.gateway.store import Store

        store = Store.open(f"sqlite:///{self.db}")
        try:
            return store.list_instances(endpoint) if endpoint else store.list_instances()
        finally:
            store.close()

    def model_servers(self) -> list[psutil.Process]:
        """Every live model-server process that belongs to this gateway's state folder."""
        return model_servers(self.state_dir)


# -- processes left behind -----------------------------------------------------------------


class ModelServerProcess:
    """`streamhost serve-model ARGS` in a child process of `python` (ours by default), its
    output in `log`, the environment this one's updated with `env`. A session fixture's
    server (`shared=True`) is not a left-over of the tests that run while it serves."""

    def __init__(
        self,
        log: Path,
        *args: str,
        python: str = sys.executable,
        env: dict[str, str] | None = None,
        shared: bool = False,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        argv = [python, "-m", "streamhost.cli", "serve-model", "--port", str(self.port), *args]
        with log.open("ab") as out:
            self.popen = subprocess.Popen(
                argv,
                env={**os.environ, **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                **own_group(),  # as the gateway starts instances (see `own_group` for why)
            )
        self.process = psutil.Process(self.popen.pid)
        if shared:
            SHARED_SERVERS.add(self.popen.pid)

    def wait_ready(self, timeout: float) -> ModelServerProcess:
        def ready() -> bool:
            assert self.popen.poll() is None, f"serve-model exited:\n{self.log_tail()}"
            return http_ok(self.url + "/ping")

        wait_for(ready, timeout, "the model server to load", interval=0.1)
        return self

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 60.0) -> None:
        # vLLM's engine core and worker finish their own shutdown after the server's
        # process has exited: on a busy machine that has taken more than 10 s.
        leftovers = stop_popen(self.popen, timeout, grace=60)
        SHARED_SERVERS.discard(self.popen.pid)
        assert not leftovers, f"left running: {leftovers}"


# Model servers that session fixtures hold (pids): `model_servers` does not count them.
SHARED_SERVERS: set[int] = set()


def running(processes: Iterable[psutil.Process]) -> list[psutil.Process]:
    """Those of `processes` still running (not gone, not zombies)."""
    alive = []
    for process in processes:
        with contextlib.suppress(psutil.Error):
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
    return alive


def still_running(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Those of `processes` still running after waiting up to `timeout` seconds for all."""
    deadline = time.monotonic() + timeout
    while running(processes) and time.monotonic() < deadline:
        time.sleep(0.1)
    return running(processes)


def descendants(pid: int) -> list[psutil.Process]:
    """Every process below `pid` now (none if it is gone)."""
    with contextlib.suppress(psutil.Error):
        return psutil.Process(pid).children(recursive=True)
    return []


def stop_popen(
    process: subprocess.Popen, timeout: float = 60.0, grace: float = 10.0
) -> list[psutil.Process]:
    """SIGTERM `process` and wait (SIGKILL past `timeout`); return its descendants that
    outlived it by `grace` seconds, which are then stopped too."""
    family = descendants(process.pid)
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    left = still_running(family, grace)
    stop_leftovers(left, 5)
    return left


def interrupt_popen(process: subprocess.Popen, timeout: float = 120.0) -> int:
    """Ctrl-C (SIGINT), as a person stops a command in a terminal; wait up to `timeout`
    (then SIGKILL) and return its exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        return process.wait(timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def model_servers(under: Path | None = None) -> list[psutil.Process]:
    """Live model-server processes: those whose command line names the folder `under`, or
    without it, those this test process started itself (a `GatewayThread`'s instances are
    its children; a `GatewayProcess`'s belong to that process and are checked by folder)."""
    if under is None:
        candidates = psutil.Process().children()
    else:
        candidates = list(psutil.process_iter())
    found = []
    for process in candidates:
        with contextlib.suppress(psutil.Error):
            cmdline = process.cmdline()
            if "serve-model" not in cmdline or process.status() == psutil.STATUS_ZOMBIE:
                continue
            if process.pid in SHARED_SERVERS:
                continue
            if under is None or any(str(under) in part for part in cmdline):
                found.append(process)
    return found


def assert_no_model_servers(under: Path | None = None, timeout: float = 15.0) -> None:
    """Fail if a model server (see `model_servers`) outlives `timeout`, or a child of this
    process is left unreaped; a left-over server is killed first so it cannot leak on."""
    left = still_running(model_servers(under), timeout)
    stop_leftovers(left, 5)
    assert not left, f"model servers still running: {[p.pid for p in left]}"
    if under is None:
        zombies = [p for p in psutil.Process().children() if _zombie(p)]
        assert not zombies, f"unreaped children: {[p.pid for p in zombies]}"


def _zombie(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


# -- raw HTTP on a socket: refusals, memory under hostile input -----------------------------


MiB = 1024 * 1024


class PeakRss:
    """The peak of a process's resident memory over a `with` block, sampled every
    millisecond; `growth` is how far it rose above where it started."""

    def __init__(self, process: psutil.Process) -> None:
        self.process = process
        self.start = self.peak = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakRss:
        self.start = self.peak = self.process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    def _sample(self) -> None:
        while not self._done.wait(0.001):
            self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def growth(self) -> int:
        return self.peak - self.start


def send_huge_field(port: int, path: str, size: int) -> bytes:
    """Send a request whose header field `X-Big` is `size` bytes long, in 64 KiB pieces,
    stopping once the server answers or closes; what it answered."""
    piece = b"a" * (64 * 1024)
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Big: ".encode())
        try:
            for _ in range(size // len(piece)):
                if select.select([sock], [], [], 0)[0]:
                    break  # answered (or closed) before the line ended
                sock.sendall(piece)
            sock.sendall(b"\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        return read_until_closed(sock)


def read_until_closed(sock: socket.socket) -> bytes:
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except ConnectionResetError:  # closed with the rest of the request unread
        pass
    return answer


def exchange(port: int, request: bytes) -> bytes:
    """Send `request` whole; what the server answered until it closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        try:
            sock.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return read_until_closed(sock)


def slow_clients(port: int, sends: list[bytes]) -> list[tuple[float, bytes]]:
    """One connection per item of `sends`, all at once: each sends its bytes and nothing
    more. For each, (seconds until the server closed it, what the server answered)."""

    def one(sent: bytes) -> tuple[float, bytes]:
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            sock.sendall(sent)
            answer = read_until_closed(sock)
        return time.monotonic() - started, answer

    with ThreadPoolExecutor(len(sends)) as pool:
        return list(pool.map(one, sends))


# -- AWS clients, signed requests, deployments ----------------------------------------------


def client(
    service: str,
    url: str,
    secret: str = SECRET_KEY,
    *,
    verify: str | bool | None = None,
    **config: Any,
) -> Any:
    """A boto3 client for the gateway; no retries, so every error is seen as it is.
    `verify`: for HTTPS, a CA bundle to trust (or False/True, as boto3 takes it)."""
    options = {"retries": {"total_max_attempts": 1}, "read_timeout": 120, **config}
    keys = {"aws_access_key_id": ACCESS_KEY, "aws_secret_access_key": secret}
    return gateway_client(service, url, REGION, keys, verify=verify, config=Config(**options))


def signed_headers(
    url: str,
    body: bytes,
    headers: dict[str, str] | None = None,
    *,
    secret: str = SECRET_KEY,
    method: str = "POST",
) -> dict[str, str]:
    """The headers boto3 would send for this request (SigV4 by botocore's signer)."""
    request = AWSRequest(method=method, url=url, data=body, headers=dict(headers or {}))
    SigV4Auth(Credentials(ACCESS_KEY, secret), "sagemaker", REGION).add_auth(request)
    return dict(request.prepare().headers)


def tls_files(folder: Path) -> tuple[Path, Path, Path]:
    """A test CA's certificate for 127.0.0.1 and localhost: (certificate, key, CA) files."""
    import trustme

    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1", "localhost")
    cert, key, ca = folder / "cert.pem", folder / "key.pem", folder / "ca.pem"
    certificate.cert_chain_pems[0].write_to_path(str(cert))
    certificate.private_key_pem.write_to_path(str(key))
    authority.cert_pem.write_to_path(str(ca))
    return cert, key, ca


def tgi_body(text: str = "hello", tokens: int = 5, stream: bool = True) -> bytes:
    """A TGI request body asking for `tokens` new tokens."""
    return json.dumps(
        {"inputs": text, "parameters": {"max_new_tokens": tokens}, "stream": stream}
    ).encode()


def create_synthetic_endpoint(
    sm: Any,
    name: str,
    *,
    count: int = 1,
    delay_ms: int = 5,
    variants: list[dict[str, Any]] | None = None,
    wait: bool = True,
    environment: dict[str, str] | None = None,
    image: str = TGI_IMAGE,
    model_data: str | None = None,
) -> None:
    """Model (TGI image, synthetic model unless `environment` says otherwise; its
    `ModelDataUrl` if given) + config + endpoint, waited until InService."""
    container = {
        "Image": image,
        "Environment": environment or {"HF_MODEL_ID": f"synthetic:{delay_ms}"},
    }
    if model_data is not None:
        container["ModelDataUrl"] = model_data
    sm.create_model(ModelName=f"{name}-model", ExecutionRoleArn=ROLE, PrimaryContainer=container)
    sm.create_endpoint_config(
        EndpointConfigName=f"{name}-config",
        ProductionVariants=variants
        or [
            {
                "VariantName": "AllTraffic",
                "ModelName": f"{name}-model",
                "InstanceType": "ml.m5.xlarge",
                "InitialInstanceCount": count,
            }
        ],
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-config")
    if wait:
        wait_in_service(sm, name)


def wait_in_service(sm: Any, name: str) -> None:
    """boto3's own waiter; on failure, the endpoint's FailureReason is the message."""
    try:
        sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig=FAST)
    except Exception:
        reason = sm.describe_endpoint(EndpointName=name).get("FailureReason")
        raise AssertionError(f"endpoint {name} did not reach InService: {reason}") from None


def delete_endpoint(sm: Any, name: str) -> None:
    sm.delete_endpoint(EndpointName=name)
    sm.get_waiter("endpoint_deleted").wait(EndpointName=name, WaiterConfig=FAST)


def targz(files: dict[str, bytes]) -> bytes:
    """A .tar.gz holding `files` (path → content); the same bytes for the same files
    (gzip's timestamp is fixed), so test ids made from it agree across pytest-xdist workers."""
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as packed,
        tarfile.open(fileobj=packed, mode="w") as tar,
    ):
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def error_of(raised: pytest.ExceptionInfo) -> tuple[int, str, str]:
    """(HTTP status, error code, message) of a botocore `ClientError`."""
    response = raised.value.response
    return (
        response["ResponseMetadata"]["HTTPStatusCode"],
        response["Error"]["Code"],
        response["Error"]["Message"],
    )


def payload_bytes(response: dict[str, Any]) -> bytes:
    """Every PayloadPart of a boto3 response stream, concatenated."""
    return b"".join(
        event["PayloadPart"]["Bytes"] for event in response["Body"] if "PayloadPart" in event
    )


# -- a model server on a thread --------------------------------------------------------------


def start_model_server(env: dict[str, str] | None = None, **kwargs: Any) -> ServerThread:
    """The model server (`create_app` over `build_config(env, **kwargs)`) on a thread, served
    with its own uvicorn configuration (`server_config`), returned once `/ping` answers 200."""
    from streamhost.server.app import create_app
    from streamhost.server.config import build_config
    from streamhost.server.http import server_config

    config = build_config(env=env or {}, **kwargs)
    served = server_config(config, create_app(config), log_level="warning")
    return ServerThread(served).start("/ping", timeout=120)
