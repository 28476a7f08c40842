"""The runtime plane: `InvokeEndpoint` and `InvokeEndpointWithResponseStream` (rest-json).

`POST /endpoints/{EndpointName}/invocations` relays one request to an instance's
`/invocations` and answers with its body; `…/invocations-response-stream` relays the
instance's chunked body as an AWS event stream, one `PayloadPart` per chunk received,
each written to the client as its own HTTP chunk the moment it arrives (nothing is
buffered). Headers follow botocore's `sagemaker-runtime` model (`X-Amzn-SageMaker-Accept`
on the stream operation, `X-Amzn-SageMaker-Content-Type` on its answer, …).

Errors follow SageMaker. Before anything is sent: unknown endpoint → 400 `ValidationError`,
a container's non-2xx answer → 424 `ModelError` (never a 5xx for a model's fault:
botocore would retry it and run the inference again), no healthy instance → 503
`ServiceUnavailable`. A container's 429 (at its concurrency limit, nothing run) is not the
model's fault: another instance is tried, and when all refuse the answer is 429
`ThrottlingException`, which botocore retries with backoff. Once streaming, failures
arrive in band: the instance breaking off → `ModelStreamError`/`StreamBroken`, the stream
running past its time or going quiet past the idle limit →
`ModelStreamError`/`ModelInvocationTimeExceeded`, a fault of our own →
`InternalStreamFailure`. A client that disconnects closes the upstream connection, which
makes the model server cancel the generation; one that stops reading is cut off when the
stream's time runs out.

This module is a raw ASGI handler (no framework per request): authentication and reading
the body happen before it, in the gateway app.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import orjson

from streamhost.client.eventencode import CONTENT_TYPE as EVENTSTREAM_CONTENT_TYPE
from streamhost.client.eventencode import (
    MODEL_INVOCATION_TIME_EXCEEDED,
    STREAM_BROKEN,
    internal_stream_failure,
    model_stream_error,
    payload_part,
)

from ..uvicorn_http import send_now
from . import bidi, errors
from .errors import AwsError, ModelError
from .metrics import Metrics
from .router import (
    NEW_SESSION,
    EndpointNotFound,
    Instance,
    NoHealthyInstance,
    Router,
    RoutingError,
    SessionGone,
    UnknownVariant,
    parse_session_header,
)
from .settings import MAX_PAYLOAD_BYTES
from .sigv4 import EventChain
from .upstream import ConnectFailed, UpstreamBroken, UpstreamPool, UpstreamResponse

__all__ = [
    "RuntimePlane",
    "RuntimeSettings",
    "parse_runtime_path",
]

log = logging.getLogger(__name__)

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

INVOKE = "invocations"
STREAM = "invocations-response-stream"
BIDI = "invocations-bidirectional-stream"
SECRET_HEADER = "x-streamhost-instance-secret"
_SECRET_HEADER = SECRET_HEADER.encode()
# What the container said, echoed back; a 424's message quotes at most this much of it.
_MAX_ERROR_BODY = 64 * 1024
_MAX_QUOTED = 4096
_CONNECT_ATTEMPTS = 3
_TOO_MANY_REQUESTS = 429
# How long a client that let the stream run out of time has to take the error message.
_LAST_WORD = 1.0
_MAX_CUSTOM_ATTRIBUTES = 1024
_ENDPOINTS = "/endpoints/"
_SESSION_ID = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*$")
_TIMED_OUT = (
    "Your invocation timed out while waiting for a response from container primary. "
    "Review the latency of the model, resolve the issue, and try again."
)
_STREAM_TIME_EXCEEDED = (
    "Your model primary did not complete sending the inference response in the allotted time."
)

# Request headers relayed to the container (lower-case, as ASGI gives them).
_INVOCATIONS_PATH = "/invocations"
_FORWARDED = (
    "content-type",
    "x-amzn-sagemaker-custom-attributes",
    "x-amzn-sagemaker-inference-id",
    "x-amzn-sagemaker-target-model",
    "x-amzn-sagemaker-session-id",
)
# The container's answer headers SageMaker passes on (besides the content type).
_NEW_SESSION = "x-amzn-sagemaker-new-session-id"
_LMI_SESSION = "x-amzn-sagemaker-session-id"  # DJL/LMI containers answer a create with it
_CLOSED_SESSION = "x-amzn-sagemaker-closed-session-id"
_CUSTOM_ATTRIBUTES = "x-amzn-sagemaker-custom-attributes"
_BIDI_ERRORS = {
    "ValidationError": "InputValidationError",
    "ServiceUnavailable": "ServiceUnavailableError",
    "ThrottlingException": "ServiceUnavailableError",
    "InternalFailure": "InternalServerError",
}


@dataclass(frozen=True)
class RuntimeSettings:
    """Limits of the runtime plane (seconds and bytes)."""

    account: str = "123456789012"
    region: str = "us-east-1"
    stream_timeout: float = 600.0  # a whole response stream
    idle_timeout: float = 60.0  # silence from the container: before its answer, or mid-stream
    invoke_timeout: float = 60.0  # InvokeEndpoint, as SageMaker's 60 s
    connect_timeout: float = 5.0
    max_payload: int = MAX_PAYLOAD_BYTES


def parse_runtime_path(raw_path: str) -> tuple[str, str] | None:
    """(endpoint name, `invocations` | `invocations-response-stream` |
    `invocations-bidirectional-stream`) of a request path as sent (percent-encoding
    intact), or None if it is not a runtime route."""
    if not raw_path.startswith(_ENDPOINTS):
        return None
    name, slash, operation = raw_path[len(_ENDPOINTS) :].partition("/")
    if not name or not slash or operation not in (INVOKE, STREAM, BIDI):
        return None
    return unquote(name), operation


class _ClientGone(Exception):
    """The client disconnected; nobody is left to answer."""


class _StreamDeadline(Exception):
    """The whole stream ran past `stream_timeout`."""


class _TooLarge(Exception):
    """A body went past the byte limit it was read with."""


class _Relay:
    """One request's bookkeeping between the relay and its disconnect watcher."""

    __slots__ = (
        "_request_id",
        "arrived",
        "expired",
        "first_byte",
        "gone",
        "instance",
        "model_done",
        "model_status",
        "parts",
        "pending",
        "receive",
        "response",
        "sending",
        "sent",
        "started",
        "streaming",
        "task",
        "watcher",
    )

    def __init__(self, task: asyncio.Task[Any] | None, receive: Receive, arrived: float) -> None:
        self.task = task
        # The request's times (time.monotonic()) and the model's part in it, for metrics.
        self.arrived = arrived
        self.instance: Instance | None = None  # the instance the request was sent to
        self.sent = 0.0  # when it was sent there
        self.first_byte: float | None = None  # when the answer's body began
        self.model_done: float | None = None  # when the model's answer was complete
        self.model_status = 0  # the model's HTTP status; 0: no whole answer
        self.parts = 0  # PayloadParts sent (a stream's)
        self.receive = receive
        self.watcher: asyncio.Task[None] | None = None
        self._request_id: str | None = None
        self.pending: Awaitable[None] | None = None  # a chunk's send the socket made wait
        self.response: UpstreamResponse | None = None
        self.started = False  # the HTTP response has begun: errors can only go in band
        self.streaming = False
        self.sending = False  # waiting for the client to take a chunk
        self.expired = False  # the stream ran past its time
        self.gone = False

    @property
    def request_id(self) -> str:
        """The request's id, made when first needed: not before the request is on its way
        to the instance (the first-token latency does not wait for it)."""
        if self._request_id is None:
            self._request_id = new_request_id()
        return self._request_id

    def watch(self) -> None:
        """Start noticing the client leave; called once the request has been written to
        the instance, so that the task's creation is not on the first-token path."""
        if self.watcher is None:
            loop = asyncio.get_running_loop()
            self.watcher = loop.create_task(_watch_disconnect(self.receive, self))

    def client_left(self) -> None:
        self.gone = True
        if self.streaming and self.response is not None:
            # Wakes the relay's pending read; the relay then closes the upstream socket.
            self.response.abort(_ClientGone())
        elif self.task is not None:
            self.task.cancel()

    def deadline_passed(self) -> None:
        self.expired = True
        if self.sending and self.task is not None:
            # The client has stopped reading (its socket is full): nothing more can reach
            # it, so stop waiting; the relay then closes both connections.
            self.task.cancel()
        elif self.response is not None:
            self.response.abort(_StreamDeadline())


class RuntimePlane:
    """Relays runtime requests to the instances the router picks."""

    def __init__(
        self,
        router: Router,
        settings: RuntimeSettings | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.router = router
        self.settings = settings or RuntimeSettings()
        self.metrics = metrics
        self._http: UpstreamPool | None = None

    async def start(self) -> None:
        """Open the pool of connections to the instances."""
        if self._http is None:
            self._http = UpstreamPool(connect_timeout=self.settings.connect_timeout)

    def connections(self) -> dict[str, int]:
        """Open and idle connections to the instances (for tests and leak checks)."""
        return self._http.stats() if self._http is not None else {"open": 0, "idle": 0}

    async def close(self) -> None:
        """Close the pooled connections."""
        if self._http is not None:
            await self._http.close()
            self._http = None

    # -- entry point --------------------------------------------------------------------

    async def handle(
        self,
        receive: Receive,
        send: Send,
        body: bytes,
        route: tuple[str, str],
        headers: dict[str, str],
        arrived: float | None = None,
    ) -> None:
        """Serve one runtime request whose body has been read and authenticated; `headers`
        are its headers by lower-case name, a repeated one's values joined with commas;
        `arrived`: when its first byte came (time.monotonic())."""
        endpoint, operation = route
        attributes = headers.get("x-amzn-sagemaker-custom-attributes")
        if attributes is not None and len(attributes) > _MAX_CUSTOM_ATTRIBUTES:
            await send_error(
                send,
                errors.invalid_runtime_input(
                    "1 validation error detected: Value at 'customAttributes' failed to "
                    "satisfy constraint: Member must have length less than or equal to "
                    f"{_MAX_CUSTOM_ATTRIBUTES}"
                ),
            )
            return
        relay = _Relay(
            asyncio.current_task(), receive, time.monotonic() if arrived is None else arrived
        )
        try:
            if operation == STREAM:
                await self._stream(endpoint, headers, body, send, relay)
            else:
                await self._invoke(endpoint, headers, body, send, relay)
        except AwsError as error:
            if not relay.gone and not relay.started:
                await send_error(send, error, relay.request_id)
        except Exception:
            log.exception("runtime request %s to endpoint %s failed", relay.request_id, endpoint)
            if not relay.gone and not relay.started:
                await send_error(send, errors.internal_failure(), relay.request_id)
        except asyncio.CancelledError:
            if not relay.gone:
                raise
            # Cancelled by our own watcher because the client left: not a failure.
            task = asyncio.current_task()
            if task is not None and hasattr(task, "uncancel"):
                task.uncancel()
        finally:
            if relay.watcher is not None:
                relay.watcher.cancel()
            if relay.instance is not None and self.metrics is not None:
                self._measure(endpoint, relay)

    async def bidirectional(
        self,
        receive: Receive,
        send: Send,
        endpoint: str,
        headers: dict[str, str],
        chain: EventChain | None,
    ) -> None:
        """Serve one InvokeEndpointWithBidirectionalStream whose head is authenticated;
        `chain` checks its events' signatures (None: authentication is off)."""
        request_id = new_request_id()
        started = False

        async def start_then_send(message: dict[str, Any]) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await bidi.relay(self, receive, start_then_send, endpoint, headers, chain, request_id)
        except AwsError as error:
            if not started:
                # SageMaker Runtime HTTP2 models its own error names (AWS's client reads
                # only those; others reach its caller as an unknown error).
                code = _BIDI_ERRORS.get(error.code, error.code)
                await send_error(send, AwsError(code, error.message, error.status), request_id)
        except Exception:
            log.exception("bidirectional stream %s to endpoint %s failed", request_id, endpoint)
            if not started:
                await send_error(send, errors.internal_failure(), request_id)

    def _measure(self, endpoint: str, relay: _Relay) -> None:
        """Record a request the model got in the endpoint's metrics."""
        now = time.monotonic()
        instance = relay.instance
        assert instance is not None and self.metrics is not None
        done = relay.model_done if relay.model_done is not None else now
        self.metrics.invocation(
            endpoint,
            instance.variant,
            status=relay.model_status if relay.model_done is not None else 0,
            instances=self.router.up_count(endpoint, instance.variant),
            model=done - relay.sent,
            total=now - relay.arrived,
            first_byte=None if relay.first_byte is None else relay.first_byte - relay.arrived,
            parts=relay.parts if relay.streaming else None,
        )

    # -- InvokeEndpoint -----------------------------------------------------------------

    async def _invoke(
        self,
        endpoint: str,
        headers: dict[str, str],
        body: bytes,
        send: Send,
        relay: _Relay,
    ) -> None:
        session_id = _session_id(headers, allow_new=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.invoke_timeout
        instance, response = await self._open(
            endpoint, headers, body, session_id, relay, streaming=False
        )
        complete = False
        try:
            try:
                if response.status >= 300:
                    error = await self._model_error(endpoint, response, deadline - loop.time())
                    relay.model_done = time.monotonic()
                    raise error
                content, complete = await response.read(
                    self.settings.max_payload, max(0.0, deadline - loop.time())
                )
                if not complete:
                    raise _TooLarge(self.settings.max_payload)
                relay.model_done = time.monotonic()
            except asyncio.TimeoutError:
                raise self._timed_out(endpoint) from None
            except UpstreamBroken as error:
                self.router.mark_down(instance)
                raise self._broken(endpoint, error) from None
            except _TooLarge:
                raise ModelError(
                    "The model's response exceeds the "
                    f"{self.settings.max_payload} byte limit of InvokeEndpoint; use "
                    "InvokeEndpointWithResponseStream for large responses.",
                    response.status,
                    "",
                    self._log_stream_arn(endpoint),
                ) from None
            answer = [
                (
                    b"content-type",
                    response.headers.get("content-type", "application/octet-stream").encode(
                        "latin-1"
                    ),
                ),
                (b"x-amzn-invoked-production-variant", instance.variant.encode()),
                (b"x-amzn-requestid", relay.request_id.encode()),
                (b"content-length", str(len(content)).encode()),
            ]
            answer += self._session_headers(endpoint, instance, response, session_id)
            attributes = response.headers.get(_CUSTOM_ATTRIBUTES)
            if attributes is not None:
                answer.append((_CUSTOM_ATTRIBUTES.encode(), attributes.encode("latin-1")))
        finally:
            if complete:
                response.release()
            else:
                response.close()  # the container must stop working on it
            self.router.release(instance)
        relay.started = True
        await send({"type": "http.response.start", "status": 200, "headers": answer})
        relay.first_byte = time.monotonic()
        await send({"type": "http.response.body", "body": content, "more_body": False})

    # -- InvokeEndpointWithResponseStream -------------------------------------------------

    async def _stream(
        self,
        endpoint: str,
        headers: dict[str, str],
        body: bytes,
        send: Send,
        relay: _Relay,
    ) -> None:
        session_id = _session_id(headers, allow_new=False)
        instance, response = await self._open(
            endpoint, headers, body, session_id, relay, streaming=True
        )
        try:
            if response.status >= 300:
                try:
                    error = await self._model_error(endpoint, response, self.settings.idle_timeout)
                    relay.model_done = time.monotonic()
                    raise error
                except asyncio.TimeoutError:
                    raise self._timed_out(endpoint) from None
                except UpstreamBroken as error:
                    raise self._broken(endpoint, error) from None
                finally:
                    response.close()
            self._session_headers(endpoint, instance, response, session_id)
            start = [
                (b"content-type", EVENTSTREAM_CONTENT_TYPE.encode()),
                (
                    b"x-amzn-sagemaker-content-type",
                    response.headers.get("content-type", "application/octet-stream").encode(
                        "latin-1"
                    ),
                ),
                (b"x-amzn-invoked-production-variant", instance.variant.encode()),
                (b"x-amzn-requestid", relay.request_id.encode()),
                (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no"),  # for a proxy in front of the gateway
            ]
            attributes = response.headers.get(_CUSTOM_ATTRIBUTES)
            if attributes is not None:
                start.append((_CUSTOM_ATTRIBUTES.encode(), attributes.encode("latin-1")))
        except BaseException:
            response.close()
            self.router.release(instance)
            raise
        relay.started = True
        try:
            await send({"type": "http.response.start", "status": 200, "headers": start})
            relay.streaming = True
            await self._relay(endpoint, instance, response, send, relay)
        finally:
            self.router.release(instance)

    async def _relay(
        self,
        endpoint: str,
        instance: Instance,
        response: UpstreamResponse,
        send: Send,
        relay: _Relay,
    ) -> None:
        """Copy the instance's chunks to the client as PayloadParts, then end the stream
        (with an exception message if it did not end well). A chunk that arrives while the
        relay waits is written from the instance connection's callback (`pushed`), saving
        a task switch per chunk; chunks that arrived while it was busy (the client was
        slower than the instance for a moment) are taken in one wait.

        `stream_timeout` bounds the whole stream, also for a client that stops reading: the
        relay then waits for the client, not the instance, and the deadline cancels that
        wait; the stream is abandoned and the server closes the client's connection.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.call_later(self.settings.stream_timeout, relay.deadline_passed)
        read = response.chunks
        idle = self.settings.idle_timeout
        tail: bytes | None = b""
        clean = False

        def pushed(part: bytes) -> bool:
            # A chunk that arrives while the loop below waits, none queued before it: sent
            # from the instance connection's callback, without waking this task, unless
            # the stream is ending. If the client's socket makes the send wait, the task
            # is woken to finish it (later chunks queue up behind it meanwhile).
            if relay.gone or relay.expired or relay.pending is not None:
                return False
            if relay.first_byte is None:
                relay.first_byte = time.monotonic()
            relay.parts += 1
            try:
                message = {
                    "type": "http.response.body",
                    "body": payload_part(part),
                    "more_body": True,
                }
                relay.pending = send_now(send, message)
            except Exception as error:
                response.abort(error)  # raised to the task, which ends the stream
                return True
            if relay.pending is not None:
                response.interrupt()
            return True

        try:
            try:
                # The hot loop: chunks arriving while it waits are pushed (above); what
                # arrived while it was busy is taken in one wait, then per chunk one encode
                # and one ASGI send (its own HTTP chunk, written at once).
                while True:
                    response.push = pushed
                    try:
                        parts = await read(idle)
                    finally:
                        response.push = None
                    if relay.pending is not None:
                        pending, relay.pending = relay.pending, None
                        relay.sending = True
                        await pending
                        relay.sending = False
                        if not parts:
                            continue
                    if not parts:
                        clean = True
                        relay.model_done = time.monotonic()
                        break
                    if relay.first_byte is None:
                        relay.first_byte = time.monotonic()
                    relay.sending = True
                    relay.parts += len(parts)
                    for part in parts:
                        await send(
                            {
                                "type": "http.response.body",
                                "body": payload_part(part),
                                "more_body": True,
                            }
                        )
                    relay.sending = False
            except _ClientGone:
                tail = None
                relay.model_done = time.monotonic()  # cut by the client, not the model
            except _StreamDeadline:
                tail = model_stream_error(MODEL_INVOCATION_TIME_EXCEEDED, _STREAM_TIME_EXCEEDED)
            except asyncio.TimeoutError:
                # A live model server sends keep-alives while it computes: silence this long
                # means it hangs. No new requests until a health check vouches for it.
                self.router.mark_down(instance)
                tail = model_stream_error(
                    MODEL_INVOCATION_TIME_EXCEEDED,
                    f"{_STREAM_TIME_EXCEEDED} It sent nothing for "
                    f"{self.settings.idle_timeout:g} seconds.",
                )
            except ConnectionError as error:
                self.router.mark_down(instance)
                tail = model_stream_error(
                    STREAM_BROKEN,
                    f"The model's response stream was broken: the connection to the "
                    f"container of endpoint {endpoint} closed before the response was "
                    f"complete ({error}).",
                )
            except asyncio.CancelledError:
                if not _stalled(relay):
                    raise
                tail = None
                relay.model_done = time.monotonic()  # the client stopped reading
            except Exception:
                log.exception("relaying a stream of endpoint %s failed", endpoint)
                tail = internal_stream_failure("The gateway failed while relaying the stream.")
            finally:
                if clean:
                    response.release()
                else:
                    # Closing the socket is what tells the model server to stop generating.
                    response.close()
            if tail is not None and not relay.gone:
                await self._finish(send, tail, relay)
        finally:
            deadline.cancel()
        if relay.expired and not relay.gone and relay.sending:
            log.warning(
                "a client of endpoint %s read nothing until the stream's %gs ran out; "
                "closing its connection",
                endpoint,
                self.settings.stream_timeout,
            )

    async def _finish(self, send: Send, tail: bytes, relay: _Relay) -> None:
        """Send the stream's last message, unless the client has stopped reading."""
        message = {"type": "http.response.body", "body": tail, "more_body": False}
        relay.sending = True
        try:
            if relay.expired:
                # Past the deadline already: the client gets a moment to take the error.
                await asyncio.wait_for(send(message), _LAST_WORD)
            else:
                await send(message)
            relay.sending = False
        except asyncio.TimeoutError:
            pass
        except asyncio.CancelledError:
            if not _stalled(relay):
                raise

    # -- shared ---------------------------------------------------------------------------

    async def _open(
        self,
        endpoint: str,
        headers: dict[str, str],
        body: bytes,
        session_id: str | None,
        relay: _Relay,
        *,
        streaming: bool,
    ) -> tuple[Instance, UpstreamResponse]:
        """Choose an instance and send it the request; (instance, response with headers).

        The operation decides the rest: its Accept header (`X-Amzn-SageMaker-Accept` on the
        stream operation), and how long the headers may take (the stream's idle limit, or the
        whole InvokeEndpoint limit).

        An instance that refuses the connection never saw the request, and one that
        answers 429 (at its concurrency limit) did no work on it, so another one is tried
        (unless a session pins the request). When every instance tried was at its limit,
        the answer is `ThrottlingException`, which botocore retries with backoff.
        """
        if self._http is None:
            raise errors.internal_failure("The runtime plane is not started.")
        if streaming:
            accept = headers.get("x-amzn-sagemaker-accept")
            timeout = self.settings.idle_timeout
        else:
            accept = headers.get("accept")
            timeout = self.settings.invoke_timeout
        target_variant = headers.get("x-amzn-sagemaker-target-variant") or None
        tried: list[Instance] = []
        overloaded: str | None = None  # the last refusal's message
        for _ in range(_CONNECT_ATTEMPTS):
            try:
                instance = self._choose(endpoint, target_variant, session_id, tried)
            except AwsError:
                if overloaded is None:
                    raise
                break
            upstream = _upstream_headers(headers, accept, instance)
            relay.sent = time.monotonic()
            try:
                response = await self._http.post(
                    instance.host,
                    instance.port,
                    _INVOCATIONS_PATH,
                    upstream,
                    body,
                    timeout=timeout,
                    sent=relay.watch,
                )
            except ConnectFailed:
                self.router.release(instance)
                self.router.mark_down(instance)
                tried.append(instance)
                continue
            except asyncio.TimeoutError:
                self.router.release(instance)
                relay.instance = instance  # it got the request and did not answer
                if streaming:
                    # No response headers within the idle limit: the model server hangs
                    # (a streaming answer starts before the generation does).
                    self.router.mark_down(instance)
                raise self._timed_out(endpoint) from None
            except UpstreamBroken as error:
                self.router.release(instance)
                self.router.mark_down(instance)
                relay.instance = instance
                raise self._broken(endpoint, error) from None
            except BaseException:
                self.router.release(instance)
                raise
            if response.status == _TOO_MANY_REQUESTS:
                try:
                    overloaded = await self._refusal(response)
                finally:
                    response.close()
                    self.router.release(instance)
                tried.append(instance)
                if session_id not in (None, NEW_SESSION):
                    break  # the session lives on that instance only
                continue
            relay.response = response
            relay.instance = instance
            relay.model_status = response.status
            return instance, response
        if overloaded is not None:
            raise errors.throttling(
                f"Endpoint {endpoint} is at its concurrency limit: its instances refused the "
                f'request before running it ("{overloaded}"). Retry with backoff.'
            )
        raise errors.service_unavailable(
            f"No instance of endpoint {endpoint} accepted the request; try again."
        )

    async def _refusal(self, response: UpstreamResponse) -> str:
        """The message of a container's 429 (TGI, OpenAI and LMI bodies, or its text)."""
        try:
            raw, _ = await response.read(_MAX_QUOTED, self.settings.idle_timeout)
        except (UpstreamBroken, asyncio.TimeoutError):
            return "Too Many Requests"
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return raw.decode("utf-8", errors="replace").strip() or "Too Many Requests"
        if isinstance(document, dict):
            message = document.get("error") or document.get("message") or document.get("detail")
            if isinstance(message, dict):
                message = message.get("message")
            if isinstance(message, str) and message:
                return message
        return raw.decode("utf-8", errors="replace")

    def _choose(
        self,
        endpoint: str,
        target_variant: str | None,
        session_id: str | None,
        tried: list[Instance],
    ) -> Instance:
        """The router's choice, its refusals turned into the runtime's AWS errors."""
        try:
            return self.router.choose(
                endpoint, target_variant=target_variant, session_id=session_id, exclude=tried
            )
        except RoutingError as error:
            raise self._routing_error(endpoint, error) from None

    def _routing_error(self, endpoint: str, error: RoutingError) -> AwsError:
        if isinstance(error, EndpointNotFound):
            return errors.runtime_endpoint_not_found(endpoint, self.settings.account)
        if isinstance(error, SessionGone):
            return errors.session_gone(error.session_id)
        if isinstance(error, UnknownVariant):
            return errors.invalid_runtime_input(
                f"Variant {error} does not exist for endpoint {endpoint}."
            )
        if isinstance(error, NoHealthyInstance):
            return errors.service_unavailable(
                f"Endpoint {endpoint} has no healthy instance right now; try again."
            )
        return errors.service_unavailable(str(error))

    def _session_headers(
        self,
        endpoint: str,
        instance: Instance,
        response: UpstreamResponse,
        session_id: str | None,
    ) -> list[tuple[bytes, bytes]]:
        """Pin or forget the sessions the container reports; the client's headers."""
        out = []
        created = response.headers.get(_NEW_SESSION)
        if created is None and session_id == NEW_SESSION:
            created = response.headers.get(_LMI_SESSION)
        if created:
            new_id, expires_at = parse_session_header(created)
            if new_id:
                self.router.pin(new_id, endpoint, instance, expires_at)
                out.append((_NEW_SESSION.encode(), created.encode("latin-1")))
        closed = response.headers.get(_CLOSED_SESSION)
        if closed:
            self.router.forget(closed.split(";", 1)[0].strip())
            out.append((_CLOSED_SESSION.encode(), closed.encode("latin-1")))
        return out

    async def _model_error(
        self, endpoint: str, response: UpstreamResponse, timeout: float
    ) -> ModelError:
        raw, _ = await response.read(_MAX_ERROR_BODY, max(0.0, timeout))
        text = raw.decode("utf-8", errors="replace")
        kind = "client" if 400 <= response.status < 500 else "server"
        return ModelError(
            f'Received {kind} error ({response.status}) from primary with message "'
            f'{text[:_MAX_QUOTED]}". {self._see_logs(endpoint)}',
            response.status,
            text,
            self._log_stream_arn(endpoint),
        )

    def _timed_out(self, endpoint: str) -> ModelError:
        return ModelError(
            f'Received server error (0) from primary with message "{_TIMED_OUT}". '
            f"{self._see_logs(endpoint)}",
            0,
            _TIMED_OUT,
            self._log_stream_arn(endpoint),
        )

    def _broken(self, endpoint: str, error: BaseException) -> ModelError:
        message = f"The container closed the connection before answering ({error})."
        return ModelError(
            f'Received server error (0) from primary with message "{message}". '
            f"{self._see_logs(endpoint)}",
            0,
            message,
            self._log_stream_arn(endpoint),
        )

    def _see_logs(self, endpoint: str) -> str:
        return (
            f"See `streamhost logs {endpoint}` (log group /aws/sagemaker/Endpoints/{endpoint}) "
            f"in account {self.settings.account} for more information."
        )

    def _log_stream_arn(self, endpoint: str) -> str:
        return (
            f"arn:aws:logs:{self.settings.region}:{self.settings.account}:log-group:"
            f"/aws/sagemaker/Endpoints/{endpoint}"
        )


# -- helpers ------------------------------------------------------------------------------


def new_request_id() -> str:
    """A request id: a random (version 4) UUID, as AWS's are."""
    # From the seeded PRNG rather than uuid4's os.urandom, a system call on every request
    # (an id needs to be unique, not secret).
    return str(uuid.UUID(int=_ids.getrandbits(128), version=4))


_ids = random.Random()


async def send_error(send: Send, error: AwsError, request_id: str | None = None) -> None:
    """Answer with an AWS error: its status, `x-amzn-ErrorType` and JSON body (and a new
    request id unless one is given)."""
    body = orjson.dumps(error.to_response())
    headers = [
        (b"content-type", b"application/json"),
        (b"x-amzn-requestid", (request_id or new_request_id()).encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers().items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _watch_disconnect(receive: Receive, relay: _Relay) -> None:
    # The body has been read, so the next message is the disconnect (or the end of the
    # response, after which this task is cancelled before it can act).
    with contextlib.suppress(asyncio.CancelledError):
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                relay.client_left()
                return


def _stalled(relay: _Relay) -> bool:
    """Whether a cancellation came from the stream's deadline, which interrupts a send to
    a client that stopped reading (it is then taken back: the request ends normally)."""
    if not relay.expired or relay.gone or not relay.sending:
        return False
    task = asyncio.current_task()
    if task is not None and hasattr(task, "uncancel"):
        task.uncancel()
    return True


def _session_id(headers: dict[str, str], *, allow_new: bool) -> str | None:
    raw = headers.get("x-amzn-sagemaker-session-id")
    if raw is None:
        return None
    value = raw.strip()
    if (allow_new and value == NEW_SESSION) or (len(value) <= 256 and _SESSION_ID.fullmatch(value)):
        return value
    raise errors.invalid_runtime_input(
        f"1 validation error detected: Value '{value[:256]}' at 'sessionId' failed to satisfy "
        "constraint: Member must satisfy regular expression pattern: "
        + ("^(NEW_SESSION)$|^[a-zA-Z0-9](-*[a-zA-Z0-9])*$" if allow_new else _SESSION_ID.pattern)
    )


def _upstream_headers(
    headers: dict[str, str], accept: str | None, instance: Instance
) -> list[tuple[bytes, bytes]]:
    upstream = [
        (name.encode(), headers[name].encode("latin-1")) for name in _FORWARDED if name in headers
    ]
    if accept is not None:
        upstream.append((b"accept", accept.encode("latin-1")))
    upstream.append((b"x-amzn-sagemaker-target-variant", instance.variant.encode()))
    upstream.append((_SECRET_HEADER, instance.secret.encode()))
    return upstream
