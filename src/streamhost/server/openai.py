"""The OpenAI API: ``/v1/chat/completions`` and ``/v1/completions``, streaming or not."""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from streamhost.engine import FinishReason, SamplingParams, TokenEvent
from streamhost.server.http import HTTPError, describe_error


class StreamOptions(BaseModel):
    """``stream_options``."""

    include_usage: bool = False


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = 1
    stop: str | list[str] | None = None
    seed: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = False
    top_k: int | None = None
    repetition_penalty: float | None = None


class ChatRequest(_Common):
    """An OpenAI chat-completions request."""

    messages: list[dict[str, Any]]
    logprobs: bool = False
    top_logprobs: int | None = None


class CompletionRequest(_Common):
    """An OpenAI completions request."""

    prompt: str | list[str]
    logprobs: int | None = None
    echo: bool = False
    suffix: str | None = None


def parse(model: type[BaseModel], body: Any) -> Any:
    """Validate an OpenAI body, mapping type errors to OpenAI's 400 error."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise HTTPError(400, describe_error(exc), "invalid_request_error") from None


def sampling_params(req: _Common, top_n: int = 0) -> SamplingParams:
    """Translate OpenAI parameters; temperature 0 means greedy, the stop string is cut."""
    if req.n not in (None, 1):
        raise HTTPError(400, "only n=1 is supported", "invalid_request_error")
    stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    temperature = req.temperature
    if temperature is not None and temperature < 0:
        raise HTTPError(400, "temperature must be >= 0", "invalid_request_error")
    # As OpenAI (and TGI's chat route): sampling by default, temperature 0 means greedy.
    do_sample = temperature != 0
    return SamplingParams(
        max_new_tokens=req.max_completion_tokens or req.max_tokens,
        do_sample=do_sample,
        temperature=temperature if do_sample else None,
        top_p=req.top_p if do_sample else None,
        top_k=req.top_k if do_sample else None,
        seed=req.seed,
        frequency_penalty=req.frequency_penalty,
        presence_penalty=req.presence_penalty,
        repetition_penalty=req.repetition_penalty,
        stop=stops,
        include_stop_str_in_output=False,
        ignore_eos=req.ignore_eos,
        top_n_tokens=top_n,
    )


def finish_reason(event: TokenEvent) -> str:
    """OpenAI's vocabulary: ``stop`` (EOS or a stop string) or ``length``."""
    if event.finish_reason in (FinishReason.EOS_TOKEN, FinishReason.STOP_SEQUENCE):
        return "stop"
    return "length"


class ChatStream:
    """Renders engine events as ``chat.completion.chunk`` SSE events."""

    def __init__(self, model: str, include_usage: bool, input_length: int, logprobs: bool) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model
        self.include_usage = include_usage
        self.input_length = input_length
        self.logprobs = logprobs
        self.first = True
        self.completion_tokens = 0

    def _chunk(self, choices: list[dict], usage: dict | None = None) -> bytes:
        body: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "streamhost",
            "choices": choices,
        }
        if self.include_usage:
            body["usage"] = usage
        return b"data: " + orjson.dumps(body) + b"\n\n"

    def render(self, event: TokenEvent) -> bytes:
        """Chunks for one event: the role first, then content, then finish and usage."""
        out = b""
        if self.first:
            self.first = False
            out += self._chunk(
                [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": ""},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                ]
            )
        self.completion_tokens = event.generated_tokens
        if event.text or event.finish_reason is None:
            if event.text:
                choice: dict[str, Any] = {
                    "index": 0,
                    "delta": {"content": event.text},
                    "logprobs": _chat_logprobs(event) if self.logprobs else None,
                    "finish_reason": None,
                }
                out += self._chunk([choice])
        if event.finish_reason is not None:
            out += self._chunk(
                [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish_reason(event)}]
            )
            if self.include_usage:
                out += self._chunk([], self.usage())
        return out

    def usage(self) -> dict:
        """The ``usage`` object."""
        return {
            "prompt_tokens": self.input_length,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.input_length + self.completion_tokens,
        }


class CompletionStream(ChatStream):
    """Renders engine events as ``text_completion`` SSE events."""

    def __init__(self, model: str, include_usage: bool, input_length: int, logprobs: bool) -> None:
        super().__init__(model, include_usage, input_length, logprobs)
        self.id = f"cmpl-{uuid.uuid4().hex}"

    def _completion(self, text: str, reason: str | None, usage: dict | None = None) -> bytes:
        body: dict[str, Any] = {
            "id": self.id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": "streamhost",
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": reason}],
        }
        if self.include_usage:
            body["usage"] = usage
        return b"data: " + orjson.dumps(body) + b"\n\n"

    def render(self, event: TokenEvent) -> bytes:
        """A chunk per event with text; the last carries ``finish_reason``."""
        self.completion_tokens = event.generated_tokens
        if event.finish_reason is None:
            return self._completion(event.text, None) if event.text else b""
        out = self._completion(event.text, finish_reason(event))
        if self.include_usage:
            body = {
                "id": self.id,
                "object": "text_completion",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": self.usage(),
            }
            out += b"data: " + orjson.dumps(body) + b"\n\n"
        return out


DONE = b"data: [DONE]\n\n"


def stream_error(message: str, error_type: str = "server_error", code: int = 500) -> bytes:
    """OpenAI's in-band error, followed by ``[DONE]``."""
    body = {"error": {"message": message, "type": error_type, "param": None, "code": code}}
    return b"data: " + orjson.dumps(body) + b"\n\n" + DONE


def error_body(message: str, error_type: str, code: Any = None) -> dict:
    """OpenAI's error object for a non-streaming response."""
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


def _chat_logprobs(event: TokenEvent) -> dict:
    top = [
        {"token": t.text, "logprob": t.logprob, "bytes": list(t.text.encode())}
        for t in event.top_tokens or ()
    ]
    return {
        "content": [
            {
                "token": event.token_text,
                "logprob": event.logprob,
                "bytes": list(event.token_text.encode()),
                "top_logprobs": top,
            }
        ]
    }


def chat_response(events: list[TokenEvent], model: str, input_length: int, logprobs: bool) -> dict:
    """A non-streaming ``chat.completion``."""
    last = events[-1]
    content = last.generated_text or ""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "streamhost",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "logprobs": {
                    "content": [_chat_logprobs(e)["content"][0] for e in events if e.id >= 0]
                }
                if logprobs
                else None,
                "finish_reason": finish_reason(last),
            }
        ],
        "usage": {
            "prompt_tokens": input_length,
            "completion_tokens": last.generated_tokens,
            "total_tokens": input_length + last.generated_tokens,
        },
    }


def completion_response(
    events: list[TokenEvent], model: str, input_length: int, prefix: str
) -> dict:
    """A non-streaming ``text_completion``."""
    last = events[-1]
    return {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "streamhost",
        "choices": [
            {
                "index": 0,
                "text": prefix + (last.generated_text or ""),
                "logprobs": None,
                "finish_reason": finish_reason(last),
            }
        ],
        "usage": {
            "prompt_tokens": input_length,
            "completion_tokens": last.generated_tokens,
            "total_tokens": input_length + last.generated_tokens,
        },
    }
