"""The hosting gateway as one ASGI app: control plane + runtime plane behind SigV4.

Every request (`POST /` with `X-Amz-Target` for the control plane, or CloudWatch's for
the endpoints' metrics, `POST /endpoints/{name}/invocations[-response-stream]` for the
runtime) has its body read under the operation's size limit and its SigV4 signature checked
with botocore's signer before anything else happens; `GET /ping` (the gateway's own health)
needs no signature, nor does `GET /metrics` (Prometheus) on a loopback address.

The lifespan takes the state's lock (`state_lock.py`: one gateway per state, so only the
gateway that owns the instances adopts or stops them), opens the state store, starts the
local-process provisioner and the runtime client, and restores the endpoints a previous
gateway left; shutting down stops every instance (unless `keep_instances`, which leaves
them for the next gateway to adopt), then lets the state go.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette

from . import autoscaling, cloudwatch, errors
from .control import ControlPlane
from .control_app import MAX_BODY_BYTES as CONTROL_MAX_BODY
from .control_app import control_routes, decode_body, send_json
from .errors import AwsError
from .lifecycle import EndpointStatus, GatewayDeployer
from .metrics import Metrics
from .provisioner import FleetManager, ProvisionerSettings
from .router import Router
from .runtime import BIDI, RuntimePlane, RuntimeSettings, parse_runtime_path, send_error
from .settings import GatewaySettings, is_loopback
from .sigv4 import SERVICE, verify, verify_event_stream
from .state_lock import Holder, StateInUse, StateLock, StateLockError
from .store import Store

__all__ = ["GatewayApp", "create_gateway_app", "serve", "server_config"]

log = logging.getLogger(__name__)

_MAX_FAILURE_REASON = 1024  # SageMaker's FailureReason length limit

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def create_gateway_app(
    settings: GatewaySettings, state_lock: StateLock | None = None
) -> GatewayApp:
    """The gateway's ASGI app for `settings` (serve it with uvicorn); it takes the state's
    lock at startup unless given the one its caller took."""
    return GatewayApp(settings, state_lock)


def serve(
    settings: GatewaySettings,
    sock: Any = None,
    *,
    log_level: str = "info",
    state_lock: StateLock | None = None,
    http2_sock: Any = None,
) -> None:
    """Run the gateway under uvicorn until SIGINT/SIGTERM, on `sock` if given (else it binds
    `settings.host`:`settings.port`), and its HTTP/2 listener on `http2_sock` if given."""
    import uvicorn

    app = create_gateway_app(settings, state_lock)
    config = server_config(settings, app, log_level=log_level)
    server = uvicorn.Server(config)
    sockets = [sock] if sock is not None else None
    if http2_sock is None:
        server.run(sockets=sockets)
        return
    from .http2 import serve_beside

    asyncio.run(serve_beside(server, sockets, app, settings, http2_sock, log_level))


def server_config(settings: GatewaySettings, app: GatewayApp, *, log_level: str = "info") -> Any:
    """uvicorn's configuration for serving `app` as `settings` say."""
    from streamhost.uvicorn_http import uvicorn_config

    from .http import refusal

    return uvicorn_config(
        app,
        settings.host,
        settings.port,
        request_timeout=settings.request_timeout,
        answer=refusal,
        log_level=log_level,
        ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
        ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
        timeout_graceful_shutdown=30,
    )


class GatewayApp:
    """The gateway: authentication, then the control or the runtime plane."""

    def __init__(self, settings: GatewaySettings, state_lock: StateLock | None = None) -> None:
        self.settings = settings
        self.state_lock = state_lock
        self.store: Store | None = None
        self.router = Router(on_down=self._instance_down)
        self.metrics = Metrics(
            resolution=max(1, min(10, round(10 * settings.autoscaling_time_scale)))
        )
        self.cloud_watch = cloudwatch.CloudWatch(self.metrics)
        self.autoscaling: autoscaling.AutoScaling | None = None
        self._tasks: list[asyncio.Task[None]] = []  # the metrics' sampler, the scaler
        self.provisioner: GatewayDeployer | None = None
        self.control: ControlPlane | None = None
        self.runtime = RuntimePlane(
            self.router,
            RuntimeSettings(
                account=settings.account,
                region=settings.region,
                stream_timeout=settings.stream_timeout,
                idle_timeout=settings.idle_timeout,
                invoke_timeout=settings.invoke_timeout,
                max_payload=settings.max_payload,
            ),
            self.metrics,
        )
        self._control_app: Starlette | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    # -- lifespan ------------------------------------------------------------------------

    async def startup(self) -> None:
        """Take the state, open the store, start the planes, restore endpoints left running."""
        settings = self.settings
        if self.state_lock is None:
            holder = Holder(pid=os.getpid(), url=settings.url)
            self.state_lock = await asyncio.to_thread(
                StateLock.acquire, settings.state_url, settings.state_dir, holder
            )
        self.store = await asyncio.to_thread(Store.open, settings.state_url)
        self.metrics.store = self.store
        self.provisioner = FleetManager(
            ProvisionerSettings(
                state_dir=settings.state_dir,
                environment=dict(settings.instance_environment),
                python=settings.instance_python,
                startup_timeout=settings.startup_timeout,
                health_interval=settings.health_interval,
                drain_timeout=settings.drain_timeout,
                stop_timeout=settings.stop_timeout,
                gpu=True if settings.provisioner == "ray" else None,
            ),
            self.store,
            self.router,
            on_failed=self._endpoint_failed,
            launcher=await self._launcher(),
            on_ready=self.metrics.setup,
        )
        self.control = ControlPlane(
            self.store,
            self.provisioner,
            settings.region,
            settings.account,
            model_check=self.provisioner.check_model,
        )
        self._control_app = Starlette(routes=control_routes(self.control))
        self.autoscaling = autoscaling.AutoScaling(
            self.store,
            self.control,
            self.metrics,
            settings.region,
            settings.account,
            settings.autoscaling_time_scale,
        )
        await self.autoscaling.load()
        await self.runtime.start()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self.metrics.run(self.router)),
            loop.create_task(self.autoscaling.run()),
        ]
        self.provisioner.start()
        await self.provisioner.reap_unrecorded()
        restored = await self.control.restore(first=settings.first_endpoint)
        await self.provisioner.reap_orphans(keep=restored)
        log.info(
            "gateway ready on %s (auth %s, state %s); restoring %d endpoint(s)",
            settings.url,
            "on" if settings.auth_enabled else "OFF",
            settings.state_url,
            len(restored),
        )

    async def _launcher(self) -> Any:
        """The Ray launcher when asked for; None: the fleet manager's local processes."""
        settings = self.settings
        if settings.provisioner != "ray":
            return None
        from .ray_launcher import RayLauncher, namespace_for

        return RayLauncher(
            settings.ray_address,
            namespace_for(settings.state_url),
            settings.stop_timeout,
            settings.ray_resource_scale,
            settings.ray_placement_timeout,
            settings.ray_ship_models,
        )

    async def shutdown(self) -> None:
        """Stop deployments in progress, the instances, the HTTP client and the store."""
        if self.control is not None:
            await self.control.close()
        if self.provisioner is not None:
            await self.provisioner.close(stop_instances=not self.settings.keep_instances)
        await self.runtime.close()
        if self._tasks:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks = []
            await self.metrics.flush(final=True)
        if self.store is not None:
            await asyncio.to_thread(self.store.close)
        if self.state_lock is not None:
            await asyncio.to_thread(self.state_lock.release)
            self.state_lock = None

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as error:
                    if isinstance(error, (StateInUse, StateLockError)):
                        log.error("%s", error)  # one line: nothing of ours went wrong
                    else:
                        log.exception("gateway startup failed")
                    # Whatever started is stopped, and the state is let go.
                    await self.shutdown()
                    await send({"type": "lifespan.startup.failed", "message": str(error)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await self.shutdown()
                except Exception as error:
                    log.exception("gateway shutdown failed")
                    await send({"type": "lifespan.shutdown.failed", "message": str(error)})
                    return
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- requests ------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        arrived = time.monotonic()
        method = scope["method"]
        path = scope["path"]
        if path == "/ping" and method in ("GET", "HEAD"):
            await _respond_empty(send, 200)
            return
        if path == "/metrics" and method == "GET":
            await self._prometheus(scope, send)
            return
        raw_path = _raw_path(scope)
        runtime_route = parse_runtime_path(raw_path) if path != "/" else None
        if method != "POST" or (path != "/" and runtime_route is None):
            await send_error(
                send,
                AwsError(
                    "UnknownOperationException",
                    f"No SageMaker operation is served at {method} {path}.",
                    status=404,
                ),
            )
            return
        limit = CONTROL_MAX_BODY if runtime_route is None else self.settings.max_payload
        headers = _joined_headers(scope["headers"])
        if runtime_route is not None and runtime_route[1] == BIDI:
            await self._bidirectional(scope, receive, send, runtime_route[0], headers)
            return
        target = headers.get("x-amz-target", "") if runtime_route is None else ""
        monitoring = target.startswith(cloudwatch.TARGET_PREFIX)
        scaling = target.startswith(autoscaling.TARGET_PREFIX)
        service = cloudwatch.SERVICE if monitoring else autoscaling.SERVICE if scaling else SERVICE
        try:
            reading = _read_body(headers, receive, limit, runtime=runtime_route is not None)
            if scope.get("http_version") == "2":
                # uvicorn's protocol bounds a request's arrival over HTTP/1.1; this, over 2.
                body = await _within(reading, self.settings.request_timeout)
            else:
                body = await reading
            if self.settings.credentials is not None:
                query = scope.get("query_string", b"").decode("latin-1")
                verify(
                    method,
                    raw_path + (f"?{query}" if query else ""),
                    headers,
                    body,
                    store=self.settings.credentials,
                    lowercased=True,
                    service=service,
                )
        except AwsError as error:
            await send_error(send, error)
            return
        except _Disconnected:
            return
        if monitoring:
            await self._json_service(target, body, send, cloudwatch, self.cloud_watch.handle)
            return
        if scaling:
            await self._json_service(target, body, send, autoscaling, self._scaling)
            return
        if runtime_route is not None:
            await self.runtime.handle(receive, send, body, runtime_route, headers, arrived)
            return
        if self._control_app is None:
            await send_error(send, errors.service_unavailable("Starting up."))
            return
        await self._control_app(scope, _replay(body, receive), send)

    async def _bidirectional(
        self, scope: Scope, receive: Receive, send: Send, endpoint: str, headers: dict[str, str]
    ) -> None:
        """InvokeEndpointWithBidirectionalStream: the head is checked here, each event of the
        body as it comes (`sigv4.EventChain`)."""
        chain = None
        if self.settings.credentials is not None:
            query = scope.get("query_string", b"").decode("latin-1")
            try:
                chain = verify_event_stream(
                    "POST",
                    _raw_path(scope) + (f"?{query}" if query else ""),
                    headers,
                    store=self.settings.credentials,
                    lowercased=True,
                )
            except AwsError as error:
                await send_error(send, error)
                return
        await self.runtime.bidirectional(receive, send, endpoint, headers, chain)

    async def _json_service(
        self,
        target: str,
        body: bytes,
        send: Send,
        service: Any,
        handle: Callable[[str, Any], Awaitable[dict[str, Any]]],
    ) -> None:
        """A call to one of the gateway's other AWS JSON services (`cloudwatch`,
        `autoscaling`: each names its target prefix and content type, and may word its
        errors with `error_document`)."""
        extra: tuple[tuple[bytes, bytes], ...] = ()
        try:
            operation = target[len(service.TARGET_PREFIX) :]
            status, document = 200, await handle(operation, decode_body(body))
        except Exception as exc:
            error = exc if isinstance(exc, AwsError) else errors.internal_failure()
            if error is not exc:
                log.exception("request %s failed", target)
            status = error.status
            render = getattr(service, "error_document", None)
            document, extra = render(error) if render else (error.to_response(), ())
        await send_json(send, status, document, service.CONTENT_TYPE, extra)

    async def _scaling(self, operation: str, params: Any) -> dict[str, Any]:
        if self.autoscaling is None:
            raise errors.service_unavailable("Starting up.")
        return await self.autoscaling.handle(operation, params)

    async def _prometheus(self, scope: Scope, send: Send) -> None:
        """The endpoints' metrics for Prometheus: unsigned on a loopback address or with
        --metrics-unsigned, else only to a SigV4-signed GET (any service's scope)."""
        settings = self.settings
        if settings.credentials is not None and not (
            settings.metrics_unsigned or is_loopback(settings.host)
        ):
            headers = _joined_headers(scope["headers"])
            query = scope.get("query_string", b"").decode("latin-1")
            try:
                verify(
                    "GET",
                    _raw_path(scope) + (f"?{query}" if query else ""),
                    headers,
                    b"",
                    store=settings.credentials,
                    lowercased=True,
                    service=None,
                )
            except AwsError as error:
                await send_error(send, error)
                return
        body = self.metrics.prometheus().encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/plain; version=0.0.4; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body, "more_body": False})

    def _instance_down(self, instance: Any) -> None:
        if self.provisioner is not None:
            self.provisioner.check_soon(instance)

    async def _endpoint_failed(self, name: str, reason: str) -> None:
        """A running endpoint lost instances it could not replace: it is Failed, with why."""
        if self.store is None:
            return
        await asyncio.to_thread(
            functools.partial(
                self.store.update_endpoint,
                name,
                expect=(EndpointStatus.IN_SERVICE,),
                status=EndpointStatus.FAILED,
                failure_reason=reason[:_MAX_FAILURE_REASON],
                modified_at=time.time(),
            )
        )


class _Disconnected(Exception):
    """The client went away while sending its body."""


async def _read_body(
    headers: dict[str, str], receive: Receive, limit: int, *, runtime: bool
) -> bytes:
    """The request body, refused (413) as soon as it is known to exceed `limit`."""
    length = headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise _too_large(limit, runtime)
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit, runtime)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _within(reading: Awaitable[bytes], timeout: float) -> bytes:
    try:
        return await asyncio.wait_for(reading, timeout)
    except asyncio.TimeoutError:
        raise AwsError(
            "RequestTimeout",
            f"The request did not arrive whole within {timeout:g} seconds.",
            status=408,
        ) from None


def _too_large(limit: int, runtime: bool) -> AwsError:
    if runtime:
        return errors.payload_too_large(limit)
    return AwsError("SerializationException", f"Request body exceeds {limit} bytes.", status=413)


def _raw_path(scope: Scope) -> str:
    raw = scope.get("raw_path")
    if raw:
        return raw.decode("latin-1")
    return quote(scope["path"])


def _joined_headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    # A repeated header is one comma-joined value, as SigV4's canonical request has it.
    headers: dict[str, str] = {}
    for name, value in raw:
        key = name.decode("latin-1")  # ASGI servers give names in lower case
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]},{text}" if key in headers else text
    return headers


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the already-read body to the control plane's app."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _respond_empty(send: Send, status: int) -> None:
    await send(
        {"type": "http.response.start", "status": status, "headers": [(b"content-length", b"0")]}
    )
    await send({"type": "http.response.body", "body": b"", "more_body": False})
