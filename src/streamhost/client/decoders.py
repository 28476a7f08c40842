"""Decoders from one streamed JSON payload to a text delta, one per wire shape.

A decoder is fed the parsed JSON objects of one response in order and keeps what it needs for
the final :class:`StreamResult`. Every in-band error shape raises through
:func:`~streamhost.client.errors.error_from_payload` before any shape-specific parsing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from streamhost.client.errors import ProtocolError, error_from_payload

__all__ = [
    "FORMATS",
    "CompleteDecoder",
    "Decoder",
    "LMIOutputsDecoder",
    "OpenAIDecoder",
    "StreamResult",
    "TextDelta",
    "TokenDecoder",
    "decoder_for",
    "detect_format",
]


@dataclass(frozen=True)
class TextDelta:
    """A piece of generated text, with its token id and log-probability if the server sent them."""

    text: str
    token_id: int | None = None
    logprob: float | None = None


@dataclass
class StreamResult:
    """What a finished stream amounted to.

    ``text`` is the concatenated deltas; ``generated_text`` is the server's own final text, if
    it sent one (TGI and LMI do, and it may include the prompt with ``return_full_text``).
    """

    text: str = ""
    finish_reason: str | None = None
    generated_tokens: int | None = None
    details: dict[str, Any] | None = None
    generated_text: str | None = None


class Decoder:
    """Base decoder: ``feed`` one JSON payload, get a delta or ``None``; ``result`` at the end."""

    format: str = ""
    """The payload format name this decoder was made for."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._tokens = 0
        self.finish_reason: str | None = None
        self.generated_tokens: int | None = None
        self.details: dict[str, Any] | None = None
        self.generated_text: str | None = None

    def feed(self, payload: Any) -> TextDelta | None:
        """Decode one payload; raise the matching :class:`StreamError` for an in-band error."""
        error = error_from_payload(payload)
        if error is not None:
            raise error
        if not isinstance(payload, Mapping):
            raise ProtocolError(f"expected a JSON object in a {self.format} stream: {payload!r}")
        delta = self._decode(payload)
        if delta is not None and delta.text:
            self._parts.append(delta.text)
            return delta
        return None

    def _decode(self, payload: Mapping[str, Any]) -> TextDelta | None:
        raise NotImplementedError

    def result(self) -> StreamResult:
        """The stream so far as a :class:`StreamResult`."""
        return StreamResult(
            text="".join(self._parts),
            finish_reason=self.finish_reason,
            generated_tokens=self.generated_tokens
            if self.generated_tokens is not None
            else self._tokens or None,
            details=self.details,
            generated_text=self.generated_text,
        )

    def _take_details(self, details: Any) -> None:
        if isinstance(details, Mapping):
            self.details = dict(details)
            reason = details.get("finish_reason")
            if isinstance(reason, str):
                self.finish_reason = reason
            tokens = details.get("generated_tokens")
            if isinstance(tokens, int) and not isinstance(tokens, bool):
                self.generated_tokens = tokens


class TokenDecoder(Decoder):
    """TGI token events and LMI 0.26+ token lines (``log_prob``/``special_token`` spellings too).

    Special tokens (EOS and the like) count as generated tokens but add no text.
    """

    format = "tgi"

    def _decode(self, payload: Mapping[str, Any]) -> TextDelta | None:
        generated = payload.get("generated_text")
        if isinstance(generated, str):
            self.generated_text = generated
        self._take_details(payload.get("details"))
        token = payload.get("token")
        if not isinstance(token, Mapping):
            return None
        self._tokens += 1
        if token.get("special") or token.get("special_token"):
            return None
        text = token.get("text")
        if not isinstance(text, str):
            return None
        logprob = token.get("logprob", token.get("log_prob"))
        token_id = token.get("id")
        return TextDelta(
            text,
            token_id=token_id if isinstance(token_id, int) else None,
            logprob=_as_float(logprob),
        )


class LMIOutputsDecoder(Decoder):
    """LMI 0.23–0.25 JSON lines ``{"outputs": ["token"]}`` (the first request of a batch)."""

    format = "lmi"

    def _decode(self, payload: Mapping[str, Any]) -> TextDelta | None:
        outputs = payload.get("outputs")
        if not isinstance(outputs, list) or not outputs:
            return None
        self._tokens += 1
        text = outputs[0]
        return TextDelta(text) if isinstance(text, str) else None


class OpenAIDecoder(Decoder):
    """OpenAI chat (``delta.content``) and completion (``text``) chunks, choice 0."""

    format = "openai"

    def _decode(self, payload: Mapping[str, Any]) -> TextDelta | None:
        usage = payload.get("usage")
        if isinstance(usage, Mapping):
            self.details = {**(self.details or {}), "usage": dict(usage)}
            tokens = usage.get("completion_tokens")
            if isinstance(tokens, int) and not isinstance(tokens, bool):
                self.generated_tokens = tokens
        choice = _first_choice(payload.get("choices"))
        if choice is None:
            return None
        reason = choice.get("finish_reason")
        if isinstance(reason, str):
            self.finish_reason = reason
        delta = choice.get("delta")
        text = delta.get("content") if isinstance(delta, Mapping) else choice.get("text")
        if not isinstance(text, str):
            return None
        self._tokens += 1
        return TextDelta(text)


def _as_float(value: Any) -> float | None:
    # A JSON integer can be too large for a float.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:
        return None


def _first_choice(choices: Any) -> Mapping[str, Any] | None:
    if not isinstance(choices, list):
        return None
    for choice in choices:
        if isinstance(choice, Mapping) and choice.get("index", 0) == 0:
            return choice
    return None


class CompleteDecoder(Decoder):
    """A whole answer in one object: LMI ``json`` output ``{"generated_text": ..., "details"?}``
    (also TGI's non-streaming list items)."""

    format = "json"

    def _decode(self, payload: Mapping[str, Any]) -> TextDelta | None:
        self._take_details(payload.get("details"))
        text = payload.get("generated_text")
        if not isinstance(text, str):
            return None
        self.generated_text = text
        return TextDelta(text)


FORMATS: dict[str, type[Decoder]] = {
    "tgi": TokenDecoder,
    "lmi-token": TokenDecoder,
    "lmi": LMIOutputsDecoder,
    "openai": OpenAIDecoder,
    "json": CompleteDecoder,
}
"""Payload format names accepted by :func:`decoder_for` and ``stream_text(format=...)``."""


def detect_format(payload: Any) -> str | None:
    """Guess the payload format from the shape of a stream's first JSON object."""
    if not isinstance(payload, Mapping):
        return None
    if "choices" in payload or str(payload.get("object", "")).startswith(
        ("chat.completion", "text_completion")
    ):
        return "openai"
    if "outputs" in payload:
        return "lmi"
    token = payload.get("token")
    if isinstance(token, Mapping):
        return "lmi-token" if "log_prob" in token else "tgi"
    if "generated_text" in payload:
        return "json"
    return None


def decoder_for(format: str) -> Decoder:
    """A fresh decoder for a payload format name (see :data:`FORMATS`)."""
    try:
        decoder = FORMATS[format]()
    except KeyError:
        known = sorted(FORMATS)
        raise ValueError(f"unknown stream format {format!r}; expected one of {known}") from None
    decoder.format = format  # one class serves both "tgi" and "lmi-token"
    return decoder
