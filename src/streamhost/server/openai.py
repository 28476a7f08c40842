"""The OpenAI API: ``/v1/chat/completions`` and ``/v1/completions``, streaming or not.

Parsing and rendering are pure functions; the handlers at the end of the module do the I/O,
and :data:`routes` lists them for the app.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from streamhost.engine import FinishReason, RequestStream, SamplingParams, TokenEvent
from streamhost.server.guard import guarded
from streamhost.server.http import (
    SSE_HEADERS,
    HTTPError,
    describe_error,
    json_response,
    streaming_response,
)
from streamhost.server.state import (
    ModelServer,
    collect,
    raise_if_failed,
    read_request_json,
    server_of,
)

SSE = "text/event-stream"


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


class InvalidRequest(HTTPError):
    """OpenAI's 400 ``invalid_request_error``, naming the parameter at fault."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(400, message, "invalid_request_error")
        self.param = param


def parse(model: type[BaseModel], body: Any) -> Any:
    """Validate an OpenAI body, mapping type errors to OpenAI's 400 error."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise InvalidRequest(describe_error(exc)) from None


# Content parts the API defines that carry something other than text (images, audio,
# files): the models served here take text only, so these are refused by name.
MEDIA_PARTS = ("image_url", "input_audio", "file")
# Parts that carry text, under the part type's own key ({"type": "text", "text": "…"}), and
# the one role each is limited to (None: any role).
TEXT_PARTS: dict[str, str | None] = {"text": None, "refusal": "assistant"}
# Roles whose content may be null: an assistant turn that only called tools, and the old
# function-result message.
NULL_CONTENT_ROLES = ("assistant", "function")
# Text parts are joined as vLLM joins them (TGI joins with "").
PART_SEPARATOR = "\n"


def prompt_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages with each ``content`` as the one string a chat template takes.

    ``content`` may be a string, a list of text parts, or null on an assistant message.
    """
    return [
        {**message, "content": message_text(message, f"messages[{i}]")}
        for i, message in enumerate(messages)
    ]


def message_text(message: dict[str, Any], where: str) -> str:
    """One message's text: its string, its text parts joined, or "" for a null assistant's."""
    content = message.get("content")
    role = message.get("role")
    if isinstance(content, str):
        return content
    if content is None:
        if role in NULL_CONTENT_ROLES:
            return ""
        raise InvalidRequest(
            f"{where}.content: a {role!s} message needs content: a string or a list of "
            "content parts",
            f"{where}.content",
        )
    if not isinstance(content, list):
        raise InvalidRequest(
            f"{where}.content: expected a string or a list of content parts, "
            f"not {type(content).__name__}",
            f"{where}.content",
        )
    return PART_SEPARATOR.join(
        _part_text(part, role, f"{where}.content[{j}]") for j, part in enumerate(content)
    )


def _part_text(part: Any, role: Any, where: str) -> str:
    kind = part.get("type") if isinstance(part, dict) else None
    if not isinstance(kind, str):
        raise InvalidRequest(
            f"{where}: a content part is an object with a string 'type'", f"{where}.type"
        )
    if kind in MEDIA_PARTS:
        raise InvalidRequest(
            f"{where}: content parts of type {kind!r} are not supported: "
            "this model takes text only",
            f"{where}.type",
        )
    if kind not in TEXT_PARTS:
        raise InvalidRequest(
            f"{where}: unknown content part type {kind!r}; expected 'text'", f"{where}.type"
        )
    only_for = TEXT_PARTS[kind]
    if only_for is not None and role != only_for:
        raise InvalidRequest(
            f"{where}: content parts of type {kind!r} belong to {only_for} messages",
            f"{where}.type",
        )
    text = part.get(kind)
    if not isinstance(text, str):
        raise InvalidRequest(f"{where}.{kind}: expected a string", f"{where}.{kind}")
    return text


def sampling_params(req: _Common, top_n: int = 0, logprobs: bool = False) -> SamplingParams:
    """Translate OpenAI parameters; temperature 0 means greedy, the stop string is cut.

    Log-probabilities are asked of the engine only when the response reports them
    (``logprobs`` on a chat request): on vLLM they cost every request that asks.
    """
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
        logprobs=logprobs,
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


def error_body(message: str, error_type: str, code: Any = None, param: str | None = None) -> dict:
    """OpenAI's error object for a non-streaming response."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def error_response(exc: HTTPError) -> Response:
    """OpenAI's error body with the error's status (and the parameter at fault, if known)."""
    param = exc.param if isinstance(exc, InvalidRequest) else None
    return json_response(error_body(exc.message, exc.error_type, exc.status, param), exc.status)


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


# -- handlers ---------------------------------------------------------------------------------


async def chat_completions(request: Request) -> Response:
    """``POST /v1/chat/completions``."""
    return await chat(await read_request_json(request), request)


async def completions(request: Request) -> Response:
    """``POST /v1/completions``."""
    return await complete(await read_request_json(request), request)


async def models(request: Request) -> Response:
    """``GET /v1/models``: the one model served."""
    name = server_of(request).model_name
    return json_response(
        {
            "object": "list",
            "data": [{"id": name, "object": "model", "created": 0, "owned_by": "streamhost"}],
        }
    )


async def chat(body: Any, request: Request) -> Response:
    """Run a chat-completions body; a session's history goes before its messages."""
    server = server_of(request)
    req = parse(ChatRequest, body)
    session = server.session_for(request)
    messages = (session.messages if session else []) + prompt_messages(req.messages)
    try:
        prompt = server.engine.apply_chat_template(messages)
    except Exception as exc:  # a template error is the client's (bad roles, content)
        raise HTTPError(422, f"Template error: {exc}", "template_error") from None
    top_n = (req.top_logprobs or 0) if req.logprobs else 0
    stream = server.submit(prompt, sampling_params(req, top_n, req.logprobs), special=False)
    model = req.model or server.model_name

    def remember(event: TokenEvent) -> None:
        if session is not None and event.finish_reason is not None:
            reply = {"role": "assistant", "content": event.generated_text or ""}
            session.messages = [*messages, reply]

    if req.stream:
        renderer = ChatStream(model, _include_usage(req), stream.input_length, req.logprobs)
        return _stream(server, stream, renderer, remember)
    events = await collect(stream)
    remember(events[-1])
    raise_if_failed(events[-1])
    server.stats.success += 1
    return json_response(chat_response(events, model, stream.input_length, req.logprobs))


async def complete(body: Any, request: Request) -> Response:
    """Run a completions body (one prompt)."""
    server = server_of(request)
    req = parse(CompletionRequest, body)
    if req.suffix:
        raise HTTPError(422, "Suffix is not supported", "suffix not supported")
    prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
    if len(prompts) != 1:
        raise HTTPError(
            422,
            "Number of prompts exceeds the maximum allowed batch size of 1",
            "batch size exceeded",
        )
    stream = server.submit(prompts[0], sampling_params(req))
    model = req.model or server.model_name
    if req.stream:
        renderer = CompletionStream(model, _include_usage(req), stream.input_length, False)
        return _stream(server, stream, renderer, None)
    events = await collect(stream)
    raise_if_failed(events[-1])
    server.stats.success += 1
    prefix = prompts[0] if req.echo else ""
    return json_response(completion_response(events, model, stream.input_length, prefix))


def _include_usage(req: _Common) -> bool:
    return bool(req.stream_options and req.stream_options.include_usage)


def _stream(
    server: ModelServer,
    stream: RequestStream,
    renderer: ChatStream,
    remember: Callable[[TokenEvent], None] | None,
) -> Response:
    """An OpenAI SSE response: chunks per event, in-band errors, then ``[DONE]``."""

    def render_event(event: TokenEvent) -> bytes:
        if remember is not None:
            remember(event)
        if event.error is not None:
            return stream_error(f"Request failed during generation: {event.error}")
        return renderer.render(event)

    server.stats.success += 1
    return streaming_response(
        stream,
        render_event,
        media_type=SSE,
        keepalive=b": keep-alive\n\n",
        interval=server.config.keepalive_interval,
        headers=stream_headers(server.config.api),
        tail=lambda: DONE,
    )


def stream_headers(api: str) -> dict[str, str]:
    """The headers of a stream: its media type as the server we stand in for sends it.

    TGI's routes (axum's Sse) send ``text/event-stream`` as it is; the OpenAI API and vLLM
    (under LMI) send ``text/event-stream; charset=utf-8``, which Starlette writes by itself.
    """
    return {"content-type": SSE, **SSE_HEADERS} if api == "tgi" else SSE_HEADERS


routes = [
    Route("/v1/models", models, methods=["GET"]),
    Route("/v1/chat/completions", guarded(chat_completions, error_response), methods=["POST"]),
    Route("/v1/completions", guarded(completions, error_response), methods=["POST"]),
]
