"""What every route of the model server shares: the engine, config, sessions and counters.

One :class:`ModelServer` per app, kept at ``app.state.server``; handlers reach it with
:func:`server_of` rather than through closures.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from starlette.requests import Request

from streamhost.engine import (
    EngineError,
    EngineNotReady,
    GenerationEngine,
    RequestStream,
    SamplingParams,
    TokenEvent,
    make_engine,
)
from streamhost.server.config import ServerConfig
from streamhost.server.http import HTTPError, read_json
from streamhost.server.metrics import RequestStats
from streamhost.server.sessions import SESSION_HEADER, Session, SessionError, SessionStore

log = logging.getLogger("streamhost.server")

CONVERSATION = "streamhost.conversation"  # the scope key of a bidirectional stream's session


class ModelServer:
    """Holds the engine, sessions and counters behind the HTTP routes."""

    def __init__(self, config: ServerConfig, engine: GenerationEngine | None = None) -> None:
        self.config = config
        self.engine = engine or make_engine(config.engine, process=config.engine_process)
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
        self._loader = threading.Thread(target=self._load, name="streamhost-loader", daemon=True)
        self._loader.start()

    def _load(self) -> None:
        started = time.perf_counter()
        try:
            if self.config.entry_point is not None:
                from streamhost.server.handler import CustomHandler

                self.custom = CustomHandler.load(self.config)
            if self.config.engine.model:
                self.engine.load_model()
            self.state = "ready"
            stages = "".join(f", {k} {v:.2f} s" for k, v in self.engine.load_stages.items())
            log.info(
                "model ready in %.1f s (%s engine%s)",
                time.perf_counter() - started,
                self.engine.name,
                stages,
            )
        except Exception as exc:  # any load failure is reported by /ping, not raised
            self.state = "failed"
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("model failed to load: %s", self.error)

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

    # -- what the routes use ------------------------------------------------------------------

    def require_loaded(self) -> None:
        """Raise :class:`EngineNotReady` (503) unless loading has finished."""
        if self.state != "ready":
            raise EngineNotReady(self.error or "model is loading")

    def submit(
        self, prompt: str | list[int], params: SamplingParams, special: bool = True
    ) -> RequestStream:
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
        """The session named by the request's session header, if any; a turn of a
        bidirectional stream carries its conversation's (``server/bidi.py``)."""
        conversation = request.scope.get(CONVERSATION)
        if conversation is not None:
            return conversation
        header = request.headers.get(SESSION_HEADER)
        if not header:
            return None
        if not self.config.sessions_enabled:
            raise HTTPError(400, "stateful sessions are disabled on this endpoint", "session")
        try:
            return self.sessions.get(header)
        except SessionError as exc:
            raise HTTPError(400, str(exc), "session") from None


def server_of(request: Request) -> ModelServer:
    """The :class:`ModelServer` of the app serving ``request``."""
    return request.app.state.server


async def read_request_json(request: Request) -> Any:
    """The request's JSON body, under the server's payload limit (413) and parsed (400)."""
    return await read_json(request, server_of(request).config.payload_limit)


async def collect(stream: RequestStream) -> list[TokenEvent]:
    """Every event of a request, for the routes that answer once generation ends."""
    try:
        return [event async for event in stream]
    finally:
        stream.close()


def raise_if_failed(last: TokenEvent) -> None:
    """A generation that failed after it started is a 424 to a non-streaming request."""
    if last.error is not None:
        raise HTTPError(424, f"Request failed during generation: {last.error}", "generation")
