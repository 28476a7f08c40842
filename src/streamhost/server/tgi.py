"""The TGI API: ``/``, ``/generate``, ``/generate_stream`` with TGI's exact wire format."""

from __future__ import annotations

import time
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from streamhost.engine import SamplingParams, TokenEvent
from streamhost.server.http import HTTPError, describe_error


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
        "x-compute-type": "cpu+streamhost",
        "x-compute-time": f"{total:.6f}",
        "x-total-time": str(int(total * 1000)),
        "x-inference-time": str(int(total * 1000)),
        "x-time-per-token": str(int(total * 1000 / max(generated, 1))),
        "x-prompt-tokens": str(input_length),
        "x-generated-tokens": str(generated),
    }
