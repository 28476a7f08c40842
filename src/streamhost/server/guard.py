"""The wrapper every generating route goes through: who may call, and errors in the API's form.

A handler raises :class:`HTTPError` or the engine's :class:`EngineError` before its first
byte; :func:`guarded` answers either with the error body of the handler's API, which each
API module renders in one place (its ``error_response``).
"""

from __future__ import annotations

import functools
import hmac
import logging
from collections.abc import Awaitable, Callable

from starlette.requests import ClientDisconnect, HTTPConnection, Request
from starlette.responses import Response

from streamhost.engine import EngineError
from streamhost.server.http import HTTPError, tgi_error
from streamhost.server.state import server_of

log = logging.getLogger("streamhost.server")

INSTANCE_SECRET_HEADER = "x-streamhost-instance-secret"
# The engine's error types and the status each is answered with (anything else is the
# model's fault: 424, as SageMaker containers answer it).
ENGINE_ERROR_STATUS = {"validation": 422, "overloaded": 429, "unhealthy": 503, "generation": 424}

Handler = Callable[[Request], Awaitable[Response]]
ErrorRenderer = Callable[[HTTPError], Response]


def guarded(handler: Handler, render_error: ErrorRenderer) -> Handler:
    """``handler`` behind the instance secret and API key, its errors drawn by ``render_error``."""

    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        refused = refusal(request)
        if refused is not None:
            return refused
        try:
            return await handler(request)
        except HTTPError as exc:
            server_of(request).stats.failure[exc.error_type] += 1
            return render_error(exc)
        except EngineError as exc:
            status = ENGINE_ERROR_STATUS.get(exc.error_type, 424)
            return render_error(HTTPError(status, str(exc), exc.error_type))
        except ClientDisconnect:
            # Gone before its body ended: there is no request to answer, nor anyone to
            # answer (499: nginx's "client closed request"; uvicorn sends nothing).
            log.debug("%s: the client left before its request body ended", request.url.path)
            return Response(status_code=499)

    return endpoint


def refusal(request: HTTPConnection) -> Response | None:
    """403 without the gateway's instance secret, 401 without the API key (as TGI answers);
    None: the caller may go on (a request, or a WebSocket before it is accepted)."""
    config = server_of(request).config
    secret = config.instance_secret
    if secret is not None and not hmac.compare_digest(
        request.headers.get(INSTANCE_SECRET_HEADER, ""), secret
    ):
        return tgi_error(403, "this instance accepts requests from its gateway only", "forbidden")
    if config.api_key is not None:
        auth = request.headers.get("authorization", "")
        if auth.lower() != f"bearer {config.api_key}".lower():
            return Response(status_code=401)
    return None
