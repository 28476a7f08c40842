"""Request and response types of the engine: one representation per concept.

The APIs (TGI, LMI, OpenAI) build :class:`SamplingParams`, submit them, and render
:class:`TokenEvent` objects in their own wire format; nothing here knows about HTTP.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class FinishReason(str, enum.Enum):
    """Why a generation ended (TGI's vocabulary, plus ``error`` and ``cancelled``)."""

    LENGTH = "length"
    EOS_TOKEN = "eos_token"
    STOP_SEQUENCE = "stop_sequence"
    ERROR = "error"
    CANCELLED = "cancelled"


@dataclass(slots=True)
class SamplingParams:
    """Per-request generation parameters, validated by :mod:`streamhost.engine.validation`.

    ``temperature`` of ``None`` or ``do_sample=False`` with no other sampling knob means
    greedy decoding; the API layers translate their own defaults into this form.
    """

    max_new_tokens: int | None = None
    do_sample: bool = False
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    typical_p: float | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    include_stop_str_in_output: bool = True
    ignore_eos: bool = False
    logprobs: bool = True
    top_n_tokens: int = 0
    truncate: int | None = None
    best_of: int | None = None

    @property
    def sampling(self) -> bool:
        """True when tokens are drawn at random rather than chosen greedily."""
        return self.do_sample


@dataclass(slots=True)
class Sample:
    """The token a runner chose for one row, its log-probability and top alternatives."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]] | None = None


@dataclass(slots=True)
class TopToken:
    """One alternative token at a step, with its log-probability."""

    id: int
    text: str
    logprob: float
    special: bool


@dataclass(slots=True)
class TokenEvent:
    """One generated token, as streamed to the APIs.

    ``text`` is the UTF-8-safe text delta this token contributes to the generated text
    (possibly empty while a multi-byte character is incomplete, or for special tokens);
    the deltas of a request concatenate to exactly ``generated_text``. ``token_text`` is
    the token's own text as TGI shows it (special tokens included). The last event of a
    request has ``finish_reason`` and ``generated_text`` set.
    """

    index: int
    id: int
    text: str
    token_text: str
    logprob: float | None
    special: bool
    top_tokens: list[TopToken] | None = None
    finish_reason: FinishReason | None = None
    generated_text: str | None = None
    generated_tokens: int = 0
    input_length: int = 0
    seed: int | None = None
    error: str | None = None

    @property
    def is_last(self) -> bool:
        """True for the final event of a request."""
        return self.finish_reason is not None


@dataclass(slots=True)
class PromptToken:
    """A prompt token with its log-probability (TGI ``decoder_input_details``)."""

    id: int
    text: str
    logprob: float | None


class EngineError(Exception):
    """Base of the errors the engine raises to its callers."""

    error_type = "generation"


class ValidationError(EngineError):
    """A request that can never run; the message is TGI's, without its prefix."""

    error_type = "validation"

    def __str__(self) -> str:
        return f"Input validation error: {self.args[0]}"


class OverloadedError(EngineError):
    """The engine holds ``max_concurrent_requests`` already."""

    error_type = "overloaded"

    def __init__(self, message: str = "Model is overloaded") -> None:
        super().__init__(message)


class GenerationError(EngineError):
    """A failure while generating (the model raised)."""

    error_type = "generation"

    def __str__(self) -> str:
        return f"Request failed during generation: {self.args[0]}"


class EngineNotReady(EngineError):
    """The model is still loading, or failed to load."""

    error_type = "unhealthy"


class EngineUnavailable(EngineError):
    """The engine asked for cannot run here (not installed, or not for this model)."""

    error_type = "unhealthy"
