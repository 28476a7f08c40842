"""The TGI API: ``/``, ``/generate``, ``/generate_stream`` with TGI's exact wire format.

Parsing and rendering are pure functions; the handlers at the end of the module do the I/O,
and :data:`routes` lists them for the app.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from streamhost.engine import RequestStream, SamplingParams, TokenEvent
from streamhost.server.guard import guarded
from streamhost.server.http import (
    SSE_HEADERS,
    HTTPError,
    describe_error,
    json_response,
    streaming_response,
    tgi_error,
)
from streamhost.server.sessions import Session
from streamhost.server.state import (
    ModelServer,
    collect,
    raise_if_failed,
    read_request_json,
    server_of,
)

COMPUTE_TYPE = "cpu+streamhost"
SSE = "text/event-stream"
# As TGI's streams (axum's Sse) carry them; the content type is sent as written, where
# Starlette would add "; charset=utf-8" to a text/ media type.
STREAM_HEADERS = {"content-type": SSE, **SSE_HEADERS, "x-compute-type": COMPUTE_TYPE}


class Grammar(BaseModel):
    """TGI's guided-decoding grammar (accepted for its shape, then refused)."""

    type: str
    value: Any = None


class TGIParameters(BaseModel):
    """TGI's ``GenerateParameters`` (unknown fields ignored, as serde does)."""

    model_config = ConfigDict(extra="ignore")

    best_of: int | None = None
    temperature: float | None = None
    repetition_penalty: float | None = None
    frequency_penalty: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    typical_p: float | None = None
    do_sample: bool = False
    max_new_tokens: int | None = None
    return_full_text: bool | None = None
    stop: list[str] = []
    truncate: int | None = None
    watermark: bool = False
    details: bool = False
    decoder_input_details: bool = False
    seed: int | None = None
    top_n_tokens: int | None = None
    grammar: Grammar | None = None
    adapter_id: str | None = None
    # Extensions (vLLM names), useful for benchmarks.
    ignore_eos: bool = False


class TGIRequest(BaseModel):
    """``{"inputs": ..., "parameters": {...}, "stream": bool}``."""

    model_config = ConfigDict(extra="ignore")

    inputs: str
    parameters: TGIParameters = TGIParameters()
    stream: bool = False


def parse_request(body: Any) -> TGIRequest:
    """Validate a TGI body; type errors are 422 as axum reports them."""
    try:
        return TGIRequest.model_validate(body)
    except ValidationError as exc:
        raise HTTPError(
            422,
            f"Failed to deserialize the JSON body into the target type: {describe_error(exc)}",
            "validation",
        ) from None


def implies_sampling(
    do_sample: bool,
    temperature: float | None,
    top_k: int | None,
    top_p: float | None,
    typical_p: float | None,
) -> bool:
    """TGI's token chooser samples when asked to, or when any warper is set."""
    return bool(
        do_sample
        or (temperature is not None and temperature != 1.0)
        or top_k is not None
        or (top_p is not None and top_p < 1.0)
        or (typical_p is not None and typical_p < 1.0)
    )


def sampling_params(p: TGIParameters) -> SamplingParams:
    """Translate TGI parameters: any warper switches sampling on, as TGI's chooser does."""
    if p.grammar is not None:
        raise HTTPError(422, "Input validation error: grammar is not supported", "validation")
    do_sample = implies_sampling(p.do_sample, p.temperature, p.top_k, p.top_p, p.typical_p)
    return SamplingParams(
        max_new_tokens=p.max_new_tokens,
        do_sample=do_sample,
        temperature=p.temperature,
        top_k=p.top_k,
        top_p=p.top_p,
        typical_p=p.typical_p,
        repetition_penalty=p.repetition_penalty,
        frequency_penalty=p.frequency_penalty,
        seed=p.seed,
        stop=list(p.stop),
        include_stop_str_in_output=True,
        ignore_eos=p.ignore_eos,
        top_n_tokens=p.top_n_tokens or 0,
        truncate=p.truncate,
        best_of=p.best_of,
    )


def _token(event: TokenEvent) -> dict:
    return {
        "id": event.id,
        "text": event.token_text,
        "logprob": event.logprob,
        "special": event.special,
    }


def _top(event: TokenEvent) -> list[dict]:
    return [
        {"id": t.id, "text": t.text, "logprob": t.logprob, "special": t.special}
        for t in event.top_tokens or ()
    ]


def render_stream_event(event: TokenEvent, details: bool, prefix: str) -> bytes:
    """One ``data: {...}\\n\\n`` SSE event exactly as TGI >= 2.1 writes it."""
    body: dict[str, Any] = {"index": event.index, "token": _token(event)}
    if event.top_tokens:
        body["top_tokens"] = _top(event)
    if event.finish_reason is None:
        body["generated_text"] = None
        body["details"] = None
    else:
        body["generated_text"] = prefix + (event.generated_text or "")
        body["details"] = (
            {
                "finish_reason": _finish(event),
                "generated_tokens": event.generated_tokens,
                "seed": event.seed,
                "input_length": event.input_length,
            }
            if details
            else None
        )
    return b"data: " + orjson.dumps(body) + b"\n\n"


def render_stream_error(message: str, error_type: str) -> bytes:
    """TGI's in-band error event."""
    return b"data: " + orjson.dumps({"error": message, "error_type": error_type}) + b"\n\n"


def _finish(event: TokenEvent) -> str:
    reason = event.finish_reason.value if event.finish_reason else "length"
    return reason if reason in ("length", "eos_token", "stop_sequence") else "length"


def generate_response(
    events: list[TokenEvent], req: TGIRequest, prefix: str, prompt_tokens: list[tuple[int, str]]
) -> dict:
    """TGI's non-streaming ``GenerateResponse``."""
    last = events[-1]
    out: dict[str, Any] = {"generated_text": prefix + (last.generated_text or "")}
    p = req.parameters
    if p.details or p.decoder_input_details:
        tokens = [_token(e) for e in events if e.id >= 0]
        details: dict[str, Any] = {
            "finish_reason": _finish(last),
            "generated_tokens": last.generated_tokens,
            "seed": last.seed,
            "prefill": [{"id": tid, "text": text, "logprob": None} for tid, text in prompt_tokens]
            if p.decoder_input_details
            else [],
            "tokens": tokens,
        }
        tops = [_top(e) for e in events if e.top_tokens]
        if tops:
            details["top_tokens"] = tops
        out["details"] = details
    return out


def timing_headers(started: float, events: list[TokenEvent], input_length: int) -> dict[str, str]:
    """TGI's ``x-*`` timing headers of a non-streaming response."""
    total = time.perf_counter() - started
    generated = events[-1].generated_tokens if events else 0
    return {
        "x-compute-type": COMPUTE_TYPE,
        "x-compute-time": f"{total:.6f}",
        "x-total-time": str(int(total * 1000)),
        "x-inference-time": str(int(total * 1000)),
        "x-time-per-token": str(int(total * 1000 / max(generated, 1))),
        "x-prompt-tokens": str(input_length),
        "x-generated-tokens": str(generated),
    }


def error_response(exc: HTTPError) -> Response:
    """TGI's error body, ``{"error", "error_type"}``, with the error's status."""
    return tgi_error(exc.status, exc.message, exc.error_type)


# -- handlers ---------------------------------------------------------------------------------


async def compat_generate(request: Request) -> Response:
    """``POST /``: a list with the full text, or a stream when the body asks for one."""
    return await generate(await read_request_json(request), request, compat=True)


async def generate_once(request: Request) -> Response:
    """``POST /generate``: the generation, answered when done (a ``stream`` field is ignored)."""
    return await generate(await read_request_json(request), request, force_stream=False)


async def generate_stream(request: Request) -> Response:
    """``POST /generate_stream``: one server-sent event per token."""
    return await generate(await read_request_json(request), request, force_stream=True)


async def generate(
    body: Any, request: Request, *, compat: bool = False, force_stream: bool | None = None
) -> Response:
    """Run a TGI body; ``compat`` is the ``/`` route's (a list, the prompt in the text)."""
    server = server_of(request)
    req = parse_request(body)
    streaming = req.stream if force_stream is None else force_stream
    p = req.parameters
    if streaming and p.decoder_input_details:
        raise HTTPError(
            422,
            "Input validation error: `decoder_input_details` == true is not supported when streaming tokens",
            "validation",
        )
    session = server.session_for(request)
    prompt = (session.text if session else "") + req.inputs
    params = sampling_params(p)
    return_full = p.return_full_text if p.return_full_text is not None else compat
    prefix = req.inputs if return_full else ""
    started = time.perf_counter()
    stream = server.submit(prompt, params)
    if streaming:
        return _stream(server, stream, session, prompt, p.details, prefix)
    events = await collect(stream)
    _remember(session, prompt, events[-1])
    raise_if_failed(events[-1])
    prompt_tokens = []
    if p.decoder_input_details:
        prompt_tokens = [(i, server.engine.token_text(i)) for i in stream.prompt_ids]
    result = generate_response(events, req, prefix, prompt_tokens)
    server.stats.success += 1
    server.stats.duration.observe(time.perf_counter() - started)
    headers = timing_headers(started, events, stream.input_length)
    return json_response([result] if compat else result, headers=headers)


def _stream(
    server: ModelServer,
    stream: RequestStream,
    session: Session | None,
    prompt: str,
    details: bool,
    prefix: str,
) -> Response:
    def render_event(event: TokenEvent) -> bytes:
        _remember(session, prompt, event)
        if event.error is not None:
            return render_stream_error(
                f"Request failed during generation: {event.error}", "generation"
            )
        return render_stream_event(event, details, prefix)

    server.stats.success += 1
    return streaming_response(
        stream,
        render_event,
        media_type=SSE,
        keepalive=b":\n\n",
        interval=server.config.keepalive_interval,
        headers=STREAM_HEADERS,
    )


def _remember(session: Session | None, prompt: str, event: TokenEvent) -> None:
    if session is not None and event.finish_reason is not None:
        session.text = prompt + (event.generated_text or "")


routes = [
    Route("/", guarded(compat_generate, error_response), methods=["POST"]),
    Route("/generate", guarded(generate_once, error_response), methods=["POST"]),
    Route("/generate_stream", guarded(generate_stream, error_response), methods=["POST"]),
]
