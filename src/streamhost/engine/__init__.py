"""Generation: model loading, continuous batching, sampling and token streaming.

Nothing here knows about HTTP. Importing this package does not import torch; the
``synthetic:DELAY_MS`` model never does.
"""

from streamhost.engine.config import EngineConfig
from streamhost.engine.core import Engine, RequestStream
from streamhost.engine.types import (
    EngineError,
    EngineNotReady,
    FinishReason,
    GenerationError,
    OverloadedError,
    SamplingParams,
    TokenEvent,
    TopToken,
    ValidationError,
)

__all__ = [
    "Engine",
    "EngineConfig",
    "EngineError",
    "EngineNotReady",
    "FinishReason",
    "GenerationError",
    "OverloadedError",
    "RequestStream",
    "SamplingParams",
    "TokenEvent",
    "TopToken",
    "ValidationError",
]
