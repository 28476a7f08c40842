"""The model server ("the container"): the SageMaker contract plus TGI, LMI and OpenAI APIs.

``create_app(config)`` returns a Starlette app that binds at once, loads the model in the
background (``/ping`` answers 503 with a reason meanwhile), validates every request before
answering 200, and streams each token event as its own HTTP chunk.

The routes are named handlers in their API's module (``container``, ``openai``, ``tgi``,
``lmi``); they reach the engine, config and sessions through ``app.state.server``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette

from streamhost.engine import GenerationEngine
from streamhost.server import container, lmi, openai, tgi
from streamhost.server.config import ServerConfig
from streamhost.server.state import ModelServer


def create_app(config: ServerConfig, engine: GenerationEngine | None = None) -> Starlette:
    """Build the model server's ASGI app."""
    routes = container.routes(config.api) + openai.routes
    if config.api != "vllm":  # vLLM's container speaks OpenAI's API only
        routes += tgi.routes if config.api == "tgi" else lmi.routes
    # Limits on a request's head are the HTTP protocol's (`server_config` in http.py).
    app = Starlette(routes=routes, lifespan=_lifespan)
    app.state.server = ModelServer(config, engine)
    return app


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    server: ModelServer = app.state.server
    server.start_loading()
    try:
        yield
    finally:
        server.shutdown()
