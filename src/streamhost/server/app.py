"""The model server ("the container"): the SageMaker contract plus TGI, LMI and OpenAI APIs.

``create_app(config)`` returns a Starlette app that binds at once, loads the model in the
background (``/ping`` answers 503 with a reason meanwhile), validates every request before
answering 200, and streams each token event as its own HTTP chunk.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from streamhost import __version__
from streamhost.engine import (
    Engine,
    EngineError,
    EngineNotReady,
    SamplingParams,
    TokenEvent,
)
from streamhost.server import lmi, openai, tgi
from streamhost.server.config import ServerConfig
from streamhost.server.http import (
    SSE_HEADERS,
    HeaderLimit,
    HTTPError,
    json_response,
    read_body,
    read_json,
    streaming_response,
    tgi_error,
)
from streamhost.server.metrics import RequestStats, render
from streamhost.server.openapi import openapi_document
from streamhost.server.sessions import (
    CLOSED_SESSION_HEADER,
    NEW_SESSION_HEADER,
    SESSION_HEADER,
    Session,
    SessionError,
    SessionStore,
)

log = logging.getLogger("streamhost.server")

INSTANCE_SECRET_HEADER = "x-streamhost-instance-secret"
STATUS = {"validation": 422, "overloaded": 429, "unhealthy": 503, "generation": 424}


class ModelServer:
    """Holds the engine, sessions and counters behind the HTTP routes."""

    def __init__(self, config: ServerConfig, engine: Engine | None = None) -> None:
        self.config = config
        self.engine = engine or _make_engine(config)
        self.custom = None
        self.sessions = SessionStore(config.session_ttl)
        self.stats = RequestStats()
        self.state = "ready" if self.engine.ready else "loading"
        self.error: str | None = None
        self._loader: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start_loading(self) -> None:
        """Load the model on a background thread; ``/ping`` reports progress."""
        if self.engine.ready:
            return

        def load() -> None:
            started = time.perf_counter()
            try:
                if self.config.entry_point is not None:
                    from streamhost.server.handler import CustomHandler

                    self.custom = CustomHandler.load(self.config)
                if self.config.engine.model:
                    self.engine.load_model()
                self.state = "ready"
                log.info("model ready in %.1f s", time.perf_counter() - started)
            except Exception as exc:  # any load failure is reported by /ping, not raised
                self.state = "failed"
                self.error = f"{type(exc).__name__}: {exc}"
                self.engine.load_error = self.error
                log.error("model failed to load: %s", self.error)

        self._loader = threading.Thread(target=load, name="streamhost-loader", daemon=True)
        self._loader.start()

    def shutdown(self) -> None:
        """Stop the engine (in-flight streams end)."""
        self.engine.shutdown()

    @property
    def healthy(self) -> bool:
        """Loaded, and the engine (when there is a model) still accepts requests."""
        return self.state == "ready" and (self.engine.ready or not self.config.engine.model)

    @property
    def model_name(self) -> str:
        """The model id clients see."""
        return self.config.engine.model or "custom"

    # -- helpers ----------------------------------------------------------------------------

    def submit(self, prompt: str | list[int], params: SamplingParams, special: bool = True):
        """Submit to the engine, counting the request."""
        self.stats.count += 1
        if not self.healthy:
            raise EngineNotReady(self.error or "model is loading")
        try:
            return self.engine.submit(prompt, params, add_special_tokens=special)
        except EngineError as exc:
            self.stats.failure[exc.error_type] += 1
            raise

    def session_for(self, request: Request) -> Session | None:
        """The session named by the request's session header, if any."""
        header = request.headers.get(SESSION_HEADER)
        if not header:
            return None
        if not self.config.sessions_enabled:
            raise HTTPError(400, "stateful sessions are disabled on this endpoint", "session")
        try:
            return self.sessions.get(header)
        except SessionError as exc:
            raise HTTPError(400, str(exc), "session") from None


def _make_engine(config: ServerConfig) -> Engine:
    model = config.engine.model
    if config.engine_process and model and not model.startswith("synthetic:"):
        from streamhost.engine.process import ProcessEngine

        return ProcessEngine(config.engine)
    return Engine(config.engine)


def _engine_error(exc: EngineError) -> HTTPError:
    status = STATUS.get(exc.error_type, 424)
    return HTTPError(status, str(exc), exc.error_type)


def create_app(config: ServerConfig, engine: Engine | None = None) -> Starlette:
    """Build the model server's ASGI app."""
    server = ModelServer(config, engine)

    def guard(handler: Callable, api: str = "tgi") -> Callable:
        """Auth, then map errors raised before the stream to the API's own error form."""

        async def endpoint(request: Request) -> Response:
            secret = config.instance_secret
            if secret is not None and not hmac.compare_digest(
                request.headers.get(INSTANCE_SECRET_HEADER, ""), secret
            ):
                return tgi_error(
                    403, "this instance accepts requests from its gateway only", "forbidden"
                )
            if config.api_key is not None and request.url.path not in ("/ping", "/health", "/info"):
                auth = request.headers.get("authorization", "")
                if auth.lower() != f"bearer {config.api_key}".lower():
                    return Response(status_code=401)
            try:
                return await handler(request)
            except HTTPError as exc:
                server.stats.failure[exc.error_type] += 1
                return _error_response(api, exc)
            except EngineError as exc:
                return _error_response(api, _engine_error(exc))
            except ClientDisconnect:
                # Gone before its body ended: there is no request to answer, nor anyone to
                # answer (499: nginx's "client closed request"; uvicorn sends nothing).
                log.debug("%s: the client left before its request body ended", request.url.path)
                return Response(status_code=499)

        return endpoint

    # -- health and info -------------------------------------------------------------------

    async def ping(request: Request) -> Response:
        if server.healthy:
            if config.api == "lmi":
                return json_response({server.model_name: {"status": "Healthy"}})
            return Response(status_code=200)
        reason = server.error or "model is loading"
        return json_response(
            {"status": server.state, "error": reason, "error_type": "healthcheck"}, 503
        )

    async def info(request: Request) -> Response:
        e = config.engine
        return json_response(
            {
                "model_id": server.model_name,
                "model_sha": getattr(server.engine.model, "sha", None),
                "model_pipeline_tag": "text-generation",
                "model_dtype": getattr(server.engine.model, "dtype", None),
                "model_device_type": str(getattr(server.engine.model, "device", "cpu")),
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
                "api": config.api,
                "state": server.state,
            }
        )

    async def metrics(request: Request) -> Response:
        engine_metrics = server.engine.metrics if server.engine.ready else None
        return PlainTextResponse(
            render(server.stats, engine_metrics), media_type="text/plain; version=0.0.4"
        )

    document = openapi_document(config.api)

    async def openapi(request: Request) -> Response:
        return json_response(document)

    async def models(request: Request) -> Response:
        name = server.model_name
        return json_response(
            {
                "object": "list",
                "data": [{"id": name, "object": "model", "created": 0, "owned_by": "streamhost"}],
            }
        )

    async def tokenize(request: Request) -> Response:
        body = await read_json(request, config.payload_limit)
        req = tgi.parse_request(body)
        if server.state != "ready":
            raise EngineNotReady(server.error or "model is loading")
        return json_response(
            [
                {"id": tid, "text": text, "start": start, "stop": stop}
                for tid, text, start, stop in server.engine.offsets(req.inputs)
            ]
        )

    # -- TGI ---------------------------------------------------------------------------------

    async def tgi_generate(
        body: Any, request: Request, *, compat: bool, force_stream: bool | None
    ) -> Response:
        req = tgi.parse_request(body)
        stream_mode = req.stream if force_stream is None else force_stream
        p = req.parameters
        if stream_mode and p.decoder_input_details:
            raise HTTPError(
                422,
                "Input validation error: `decoder_input_details` == true is not supported when streaming tokens",
                "validation",
            )
        session = server.session_for(request)
        prompt = (session.text if session else "") + req.inputs
        params = tgi.sampling_params(p)
        return_full = p.return_full_text if p.return_full_text is not None else compat
        prefix = req.inputs if return_full else ""
        started = time.perf_counter()
        stream = server.submit(prompt, params)

        def remember(event: TokenEvent) -> None:
            if session is not None and event.finish_reason is not None:
                session.text = prompt + (event.generated_text or "")

        if stream_mode:

            def render_event(event: TokenEvent) -> bytes:
                remember(event)
                if event.error is not None:
                    return tgi.render_stream_error(
                        f"Request failed during generation: {event.error}", "generation"
                    )
                return tgi.render_stream_event(event, p.details, prefix)

            return _count(
                server,
                streaming_response(
                    stream,
                    render_event,
                    media_type="text/event-stream",
                    keepalive=b":\n\n",
                    interval=config.keepalive_interval,
                    headers={**SSE_HEADERS, "x-compute-type": "cpu+streamhost"},
                ),
            )
        events = await _collect(stream)
        last = events[-1]
        remember(last)
        if last.error is not None:
            raise HTTPError(424, f"Request failed during generation: {last.error}", "generation")
        prompt_tokens = []
        if p.decoder_input_details:
            prompt_tokens = [(i, server.engine.vocab.token_text(i)) for i in stream.prompt_ids]
        result = tgi.generate_response(events, req, prefix, prompt_tokens)
        server.stats.success += 1
        server.stats.duration.observe(time.perf_counter() - started)
        headers = tgi.timing_headers(started, events, stream.input_length)
        return json_response([result] if compat else result, headers=headers)

    async def tgi_root(request: Request) -> Response:
        body = await read_json(request, config.payload_limit)
        return await tgi_generate(body, request, compat=True, force_stream=None)

    async def tgi_generate_route(request: Request) -> Response:
        body = await read_json(request, config.payload_limit)
        return await tgi_generate(body, request, compat=False, force_stream=False)

    async def tgi_generate_stream(request: Request) -> Response:
        body = await read_json(request, config.payload_limit)
        return await tgi_generate(body, request, compat=False, force_stream=True)

    # -- OpenAI --------------------------------------------------------------------------------

    def openai_stream(
        stream, renderer: openai.ChatStream, remember: Callable[[TokenEvent], None] | None
    ) -> Response:
        """An OpenAI SSE response: chunks per event, in-band errors, then ``[DONE]``."""

        def render_event(event: TokenEvent) -> bytes:
            if remember is not None:
                remember(event)
            if event.error is not None:
                return openai.stream_error(f"Request failed during generation: {event.error}")
            return renderer.render(event)

        return _count(
            server,
            streaming_response(
                stream,
                render_event,
                media_type="text/event-stream",
                keepalive=b": keep-alive\n\n",
                interval=config.keepalive_interval,
                headers=SSE_HEADERS,
                tail=lambda: openai.DONE,
            ),
        )

    async def chat(body: Any, request: Request) -> Response:
        req = openai.parse(openai.ChatRequest, body)
        session = server.session_for(request)
        messages = (session.messages if session else []) + req.messages
        try:
            prompt = server.engine.apply_chat_template(messages)
        except Exception as exc:  # a template error is the client's (bad roles, content)
            raise HTTPError(422, f"Template error: {exc}", "template_error") from None
        top_n = (req.top_logprobs or 0) if req.logprobs else 0
        stream = server.submit(prompt, openai.sampling_params(req, top_n), special=False)
        model = req.model or server.model_name

        def remember(event: TokenEvent) -> None:
            if session is not None and event.finish_reason is not None:
                session.messages = [
                    *messages,
                    {"role": "assistant", "content": event.generated_text or ""},
                ]

        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            renderer = openai.ChatStream(model, include_usage, stream.input_length, req.logprobs)

            return openai_stream(stream, renderer, remember)
        events = await _collect(stream)
        remember(events[-1])
        if events[-1].error is not None:
            raise HTTPError(
                424, f"Request failed during generation: {events[-1].error}", "generation"
            )
        server.stats.success += 1
        return json_response(openai.chat_response(events, model, stream.input_length, req.logprobs))

    async def completions(body: Any, request: Request) -> Response:
        req = openai.parse(openai.CompletionRequest, body)
        if req.suffix:
            raise HTTPError(422, "Suffix is not supported", "suffix not supported")
        prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        if len(prompts) != 1:
            raise HTTPError(
                422,
                "Number of prompts exceeds the maximum allowed batch size of 1",
                "batch size exceeded",
            )
        stream = server.submit(prompts[0], openai.sampling_params(req))
        model = req.model or server.model_name
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            renderer = openai.CompletionStream(model, include_usage, stream.input_length, False)

            return openai_stream(stream, renderer, None)
        events = await _collect(stream)
        if events[-1].error is not None:
            raise HTTPError(
                424, f"Request failed during generation: {events[-1].error}", "generation"
            )
        server.stats.success += 1
        prefix = prompts[0] if req.echo else ""
        return json_response(openai.completion_response(events, model, stream.input_length, prefix))

    async def chat_route(request: Request) -> Response:
        return await chat(await read_json(request, config.payload_limit), request)

    async def completions_route(request: Request) -> Response:
        return await completions(await read_json(request, config.payload_limit), request)

    # -- LMI --------------------------------------------------------------------------------------

    async def lmi_invoke(body: Any, request: Request) -> Response:
        if server.custom is not None:
            return await server.custom.invoke(request, body)
        req = lmi.parse_request(body)
        session = server.session_for(request)
        prompt = (session.text if session else "") + req.inputs
        params = lmi.sampling_params(req.parameters, config.lmi_default_max_new_tokens)
        formatter = lmi.choose_formatter(config.output_formatter, req.stream)
        if formatter == "tgi_compat":
            tgi_body = {
                "inputs": req.inputs,
                "parameters": body.get("parameters") or {},
                "stream": req.stream,
            }
            return await tgi_generate(tgi_body, request, compat=True, force_stream=None)
        stream = server.submit(prompt, params)
        prefix = req.inputs if req.parameters.return_full_text else ""
        renderer = lmi.LMIStream(formatter, config.jsonlines_format, req.parameters.details, prefix)

        def render_event(event: TokenEvent) -> bytes:
            if session is not None and event.finish_reason is not None:
                session.text = prompt + (event.generated_text or "")
            if event.error is not None:
                return renderer.render_error(f"Request failed during generation: {event.error}")
            return renderer.render(event)

        if req.stream is False and formatter == "json":
            events = await _collect(stream)
            for event in events:
                render_event(event)
            if events[-1].error is not None:
                raise HTTPError(424, events[-1].error, "generation")
            server.stats.success += 1
            return json_response({"generated_text": prefix + (events[-1].generated_text or "")})
        return _count(
            server,
            streaming_response(
                stream,
                render_event,
                media_type=lmi.CONTENT_TYPES[formatter],
                keepalive=None,
                interval=config.keepalive_interval,
                headers={"X-Accel-Buffering": "no"},
            ),
        )

    # -- /invocations: sessions, then dispatch on the payload's shape ------------------------------

    async def invocations(request: Request) -> Response:
        if server.custom is not None:
            # A custom handler takes any bytes (images, audio), not only JSON.
            if server.state != "ready":
                raise EngineNotReady(server.error or "model is loading")
            return await server.custom.invoke(
                request, await read_body(request, config.payload_limit)
            )
        body = await read_json(request, config.payload_limit)
        if isinstance(body, dict) and "requestType" in body:
            return session_request(body, request)
        if not isinstance(body, dict):
            raise HTTPError(
                422,
                "Failed to deserialize the JSON body into the target type: expected an object",
                "validation",
            )
        if "messages" in body:
            return await chat(body, request)
        if "prompt" in body and "inputs" not in body:
            return await completions(body, request)
        if config.api == "lmi":
            return await lmi_invoke(body, request)
        return await tgi_generate(body, request, compat=True, force_stream=None)

    def session_request(body: dict, request: Request) -> Response:
        kind = body.get("requestType")
        if not config.sessions_enabled:
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
            return json_response(
                {"sessionId": session.id}, headers={CLOSED_SESSION_HEADER: session.id}
            )
        raise HTTPError(
            400, f"unknown requestType {kind!r}: expected NEW_SESSION or CLOSE", "session"
        )

    async def lmi_route(request: Request) -> Response:
        body = await read_json(request, config.payload_limit)
        if server.custom is None and not isinstance(body, dict):
            raise HTTPError(400, "Invalid request: expected a JSON object", "validation")
        return await lmi_invoke(body, request)

    routes = [
        Route("/ping", ping, methods=["GET"]),
        Route("/health", ping, methods=["GET"]),
        Route("/info", info, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/tokenize", guard(tokenize), methods=["POST"]),
        Route("/invocations", guard(invocations, config.api), methods=["POST"]),
        Route("/v1/chat/completions", guard(chat_route, "openai"), methods=["POST"]),
        Route("/v1/completions", guard(completions_route, "openai"), methods=["POST"]),
    ]
    if config.api == "tgi":
        routes += [
            Route("/", guard(tgi_root), methods=["POST"]),
            Route("/generate", guard(tgi_generate_route), methods=["POST"]),
            Route("/generate_stream", guard(tgi_generate_stream), methods=["POST"]),
        ]
    else:
        routes += [
            Route("/predictions/{model}", guard(lmi_route, "lmi"), methods=["POST"]),
            Route("/models/{model}/invoke", guard(lmi_route, "lmi"), methods=["POST"]),
        ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        server.start_loading()
        try:
            yield
        finally:
            server.shutdown()

    app = Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(HeaderLimit)])
    app.state.server = server
    return app


def _error_response(api: str, exc: HTTPError) -> Response:
    if api == "openai":
        return json_response(openai.error_body(exc.message, exc.error_type, exc.status), exc.status)
    if api == "lmi":
        return json_response(lmi.error_body(exc.status, exc.message, exc.error_type), exc.status)
    return tgi_error(exc.status, exc.message, exc.error_type)


def _count(server: ModelServer, response: Response) -> Response:
    server.stats.success += 1
    return response


async def _collect(stream) -> list[TokenEvent]:
    try:
        return [event async for event in stream]
    finally:
        stream.close()
