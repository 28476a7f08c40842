"""What the model server needs of an engine, whichever engine it is.

``server/`` depends on :class:`GenerationEngine` and the types it names, never on a
concrete engine. Two engines implement it: ours (:class:`streamhost.engine.core.Engine`,
continuous batching in PyTorch, in its own process) and vLLM's
(:class:`streamhost.engine.vllm.VllmEngine`, imported only when chosen).
:func:`streamhost.engine.make_engine` picks one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from streamhost.engine.config import EngineConfig
from streamhost.engine.metrics import EngineMetrics
from streamhost.engine.stream import RequestStream
from streamhost.engine.types import SamplingParams


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """The loaded model as /info and the OpenAI model list describe it."""

    model_id: str
    dtype: str | None = None
    device: str = "cpu"
    sha: str | None = None
    context_window: int | None = None


class GenerationEngine(Protocol):
    """Load a model, accept requests, stream their tokens.

    ``submit`` validates everything a request can be refused for (so the APIs answer
    4xx before any 200), tokenizes the prompt, and returns a :class:`RequestStream`;
    closing the stream cancels the request. ``config`` holds the limits in force once the
    model is loaded (the APIs' /info reports them).
    """

    name: str  # "builtin" or "vllm": /info and the logs say which engine answers
    config: EngineConfig
    load_stages: dict[str, float]  # seconds per stage of load_model, when known

    @property
    def ready(self) -> bool: ...
    @property
    def model_info(self) -> ModelInfo | None: ...
    @property
    def metrics(self) -> EngineMetrics: ...

    def start(self) -> None:
        """Begin loading where that can overlap the caller's own start (non-blocking)."""

    def load_model(self) -> None:
        """Load the model (blocking; called off the event loop). Raises on failure."""

    def shutdown(self) -> None:
        """Stop; running requests end with ``cancelled``."""

    def submit(
        self, prompt: str | list[int], params: SamplingParams, *, add_special_tokens: bool = True
    ) -> RequestStream: ...

    def token_text(self, token_id: int) -> str:
        """One token's own text (TGI's prompt details)."""

    def offsets(self, text: str) -> list[tuple[int, str, int, int]]:
        """``(id, text, start, stop)`` per token of ``text`` (TGI's /tokenize)."""

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """Render a conversation with the model's chat template (or a plain fallback)."""
