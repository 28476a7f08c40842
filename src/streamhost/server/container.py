"""The routes every personality serves: the SageMaker container contract and the metadata.

``/ping`` (and ``/health``), ``/invocations`` (sessions, then dispatch on the payload's
shape to the API that reads it), ``/info``, ``/metrics``, ``/openapi.json`` and ``/tokenize``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from streamhost import __version__
from streamhost.server import bidi, lmi, openai, tgi
from streamhost.server.guard import guarded
from streamhost.server.http import HTTPError, json_response, read_body
from streamhost.server.metrics import render
from streamhost.server.openapi import openapi_document
from streamhost.server.sessions import (
    CLOSED_SESSION_HEADER,
    NEW_SESSION_HEADER,
    SESSION_HEADER,
    SessionError,
)
from streamhost.server.state import read_request_json, server_of

_document = functools.cache(openapi_document)


async def ping(request: Request) -> Response:
    """Health: 200 once the model is loaded (LMI: a JSON status), else 503 with the reason."""
    server = server_of(request)
    if server.healthy:
        if server.config.api == "lmi":
            return json_response({server.model_name: {"status": "Healthy"}})
        return Response(status_code=200)
    reason = server.error or "model is loading"
    return json_response(
        {"status": server.state, "error": reason, "error_type": "healthcheck"}, 503
    )


async def info(request: Request) -> Response:
    """TGI's ``Info``: the model and the server's limits."""
    server = server_of(request)
    e = server.config.engine
    model = server.engine.model_info
    return json_response(
        {
            "model_id": server.model_name,
            "model_sha": getattr(model, "sha", None),
            "model_pipeline_tag": "text-generation",
            "model_dtype": getattr(model, "dtype", None),
            "model_device_type": getattr(model, "device", "cpu"),
            "max_concurrent_requests": e.max_concurrent_requests,
            "max_best_of": e.max_best_of,
            "max_stop_sequences": e.max_stop_sequences,
            "max_input_tokens": e.max_input_tokens,
            "max_input_length": e.max_input_tokens,
            "max_total_tokens": e.max_total_tokens,
            "max_batch_size": e.max_batch_size,
            "validation_workers": 1,
            "max_client_batch_size": 1,
            "router": "streamhost",
            "version": __version__,
            "sha": None,
            "docker_label": None,
            "api": server.config.api,
            "state": server.state,
        }
    )


async def metrics(request: Request) -> Response:
    """Prometheus text with TGI's metric names."""
    server = server_of(request)
    engine_metrics = server.engine.metrics if server.engine.ready else None
    return PlainTextResponse(
        render(server.stats, engine_metrics), media_type="text/plain; version=0.0.4"
    )


async def openapi(request: Request) -> Response:
    """This personality's OpenAPI document."""
    return json_response(_document(server_of(request).config.api))


async def tokenize(request: Request) -> Response:
    """TGI's ``/tokenize``: the prompt's tokens with their character offsets."""
    server = server_of(request)
    req = tgi.parse_request(await read_request_json(request))
    server.require_loaded()
    return json_response(
        [
            {"id": tid, "text": text, "start": start, "stop": stop}
            for tid, text, start, stop in server.engine.offsets(req.inputs)
        ]
    )


async def invocations(request: Request) -> Response:
    """SageMaker's ``/invocations``: a session request, or a body of the API it is shaped for."""
    server = server_of(request)
    if server.custom is not None:
        # A custom handler takes any bytes (images, audio), not only JSON.
        server.require_loaded()
        body = await read_body(request, server.config.payload_limit)
        return await server.custom.invoke(request, body)
    body = await read_request_json(request)
    if isinstance(body, dict) and "requestType" in body:
        return session_request(body, request)
    if not isinstance(body, dict):
        raise HTTPError(
            422,
            "Failed to deserialize the JSON body into the target type: expected an object",
            "validation",
        )
    if "messages" in body:
        return await openai.chat(body, request)
    if "prompt" in body and "inputs" not in body:
        return await openai.complete(body, request)
    if server.config.api == "vllm":
        raise HTTPError(
            400,
            "vLLM's /invocations takes an OpenAI chat body (messages) or completion body (prompt)",
            "invalid_request_error",
        )
    if server.config.api == "lmi":
        return await lmi.invoke(body, request)
    return await tgi.generate(body, request, compat=True)


def session_request(body: dict[str, Any], request: Request) -> Response:
    """``{"requestType": "NEW_SESSION" | "CLOSE"}``: open or close a stateful session."""
    server = server_of(request)
    kind = body.get("requestType")
    if not server.config.sessions_enabled:
        raise HTTPError(400, "stateful sessions are disabled on this endpoint", "session")
    if kind == "NEW_SESSION":
        try:
            session = server.sessions.create()
        except SessionError as exc:
            raise HTTPError(429, str(exc), "session") from None
        return json_response(
            {"sessionId": session.id}, headers={NEW_SESSION_HEADER: session.expires_header()}
        )
    if kind == "CLOSE":
        header = request.headers.get(SESSION_HEADER)
        if not header:
            raise HTTPError(400, f"CLOSE needs the {SESSION_HEADER} header", "session")
        try:
            session = server.sessions.close(header)
        except SessionError as exc:
            raise HTTPError(400, str(exc), "session") from None
        return json_response({"sessionId": session.id}, headers={CLOSED_SESSION_HEADER: session.id})
    raise HTTPError(400, f"unknown requestType {kind!r}: expected NEW_SESSION or CLOSE", "session")


def _errors(api: str) -> Callable[[HTTPError], Response]:
    return {"lmi": lmi.error_response, "vllm": openai.error_response}.get(api, tgi.error_response)


async def answer_turn(request: Request) -> Response:
    """A bidirectional stream's turn, run as ``/invocations`` runs a request (``bidi.py``)."""
    return await guarded(invocations, _errors(server_of(request).config.api))(request)


def routes(api: str) -> list[BaseRoute]:
    """The container's routes; ``/invocations`` answers errors in the personality's form,
    and its bidirectional stream is a WebSocket beside it."""
    errors = _errors(api)
    return [
        *bidi.routes,
        Route("/ping", ping, methods=["GET"]),
        Route("/health", ping, methods=["GET"]),
        Route("/info", info, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/tokenize", guarded(tokenize, tgi.error_response), methods=["POST"]),
        Route("/invocations", guarded(invocations, errors), methods=["POST"]),
    ]
