"""HTTP building blocks shared by the API modules: bodies, errors, streaming responses; and
the server's uvicorn configuration, its HTTP protocol refusing in TGI's error form."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from pydantic import ValidationError as PydanticValidationError
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from streamhost.engine import RequestStream, TokenEvent
from streamhost.server.config import ServerConfig
from streamhost.uvicorn_http import RequestRefused, RequestTimedOut, error_response, uvicorn_config

JSON = "application/json"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def describe_error(exc: PydanticValidationError) -> str:
    """``field.path: message`` for the first problem pydantic found in a body."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "body"
    return f"{where}: {err['msg']}"


class HTTPError(Exception):
    """An error answered before the stream starts: status, message and error type."""

    def __init__(self, status: int, message: str, error_type: str = "validation") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response serialised with orjson."""
    return Response(orjson.dumps(body), status_code=status, media_type=JSON, headers=headers)


def tgi_error(status: int, message: str, error_type: str) -> Response:
    """TGI's error body: ``{"error": ..., "error_type": ...}``."""
    return json_response({"error": message, "error_type": error_type}, status)


async def read_body(request: Request, limit: int) -> bytes:
    """Read a body, refusing one over ``limit`` bytes (413) without buffering it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPError(
            413,
            f"Failed to buffer the request body: length limit exceeded ({limit} bytes)",
            "payload_too_large",
        )
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPError(
                413,
                f"Failed to buffer the request body: length limit exceeded ({limit} bytes)",
                "payload_too_large",
            )
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, limit: int) -> Any:
    """Read and parse a JSON body, refusing oversize (413) and malformed (400) ones."""
    raw = await read_body(request, limit)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise HTTPError(
            400, f"Failed to parse the request body as JSON: {exc}", "validation"
        ) from None


async def events_with_keepalive(
    stream: RequestStream, interval: float
) -> AsyncIterator[TokenEvent | None]:
    """The stream's events, with ``None`` whenever ``interval`` seconds pass without one."""
    while True:
        try:
            event = await stream.next_event(interval)
        except StopAsyncIteration:
            return
        yield event
        if event is not None and event.finish_reason is not None:
            return


def streaming_response(
    stream: RequestStream,
    render: Callable[[TokenEvent], bytes | None],
    *,
    media_type: str,
    keepalive: bytes | None,
    interval: float,
    headers: dict[str, str] | None = None,
    tail: Callable[[], bytes | None] | None = None,
) -> StreamingResponse:
    """One HTTP chunk per rendered event, flushed at once; closing cancels the request."""

    async def body() -> AsyncIterator[bytes]:
        try:
            async for event in events_with_keepalive(stream, interval):
                if event is None:
                    if keepalive:
                        yield keepalive
                    continue
                chunk = render(event)
                if chunk:
                    yield chunk
            if tail is not None:
                end = tail()
                if end:
                    yield end
        finally:
            # The client went away (the response task was cancelled) or the stream ended:
            # either way the engine must let go of the request.
            stream.close()

    return StreamingResponse(body(), media_type=media_type, headers=headers)


def refusal(error: RequestRefused) -> bytes:
    """The answer to a request the HTTP protocol refuses itself (a head over its limits, a
    request not sent in time), in TGI's error form."""
    error_type = "request_timeout" if isinstance(error, RequestTimedOut) else "validation"
    body = orjson.dumps({"error": str(error), "error_type": error_type})
    return error_response(error.status, [(b"content-type", JSON.encode())], body)


def server_config(config: ServerConfig, app: Any, *, log_level: str = "info") -> Any:
    """uvicorn's configuration for serving `app` as `config` says."""
    return uvicorn_config(
        app,
        config.host,
        config.port,
        request_timeout=config.request_timeout,
        answer=refusal,
        log_level=log_level,
        timeout_graceful_shutdown=max(1, round(config.graceful_timeout)),
    )
