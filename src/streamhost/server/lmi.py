"""The LMI (DJL Serving) API: ``{"inputs", "parameters", "stream"}`` and its output formatters.

Formatters, chosen by ``option.output_formatter`` (else by the request's ``stream`` as LMI
0.27+ does):

- ``jsonlines`` with ``option.jsonlines_format=outputs`` (the default): LMI 0.23's
  ``{"outputs": ["<token>"]}`` line per token, which the original sample app parses;
  with ``option.jsonlines_format=token``: LMI 0.26+'s ``{"token": {...}}`` lines, the last
  one with ``generated_text`` (and ``details`` when asked).
- ``json``: one ``{"generated_text": "..."}`` object, streamed in pieces as LMI 0.23 did.
- ``sse``: the token lines as ``data: ...`` events. ``tgi_compat``: TGI's SSE events.
- ``none``: the raw token text.

Each is sent with its media type as written (``text/event-stream`` for ``sse``, as DJL
Serving does). The handlers at the end of the module do the I/O; :data:`routes` lists them.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from streamhost.engine import FinishReason, SamplingParams, TokenEvent
from streamhost.server import tgi
from streamhost.server.guard import guarded
from streamhost.server.http import HTTPError, describe_error, json_response, streaming_response
from streamhost.server.state import collect, read_request_json, server_of
from streamhost.server.tgi import implies_sampling

CONTENT_TYPES = {
    "jsonlines": "application/jsonlines",
    "json": "application/json",
    "sse": "text/event-stream",
    "tgi_compat": "text/event-stream",
    "none": "text/plain; charset=utf-8",
}


class LMIParameters(BaseModel):
    """LMI's request parameters (unknown ones ignored, as the container does)."""

    model_config = ConfigDict(extra="ignore")

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
    stop_sequences: list[str] | None = None
    stop: list[str] | None = None
    details: bool = False
    decoder_input_details: bool = False
    return_full_text: bool = False
    truncate: int | None = None
    ignore_eos_token: bool = False
    ignore_eos: bool = False


class LMIRequest(BaseModel):
    """An LMI request body."""

    model_config = ConfigDict(extra="ignore")

    inputs: str
    parameters: LMIParameters = LMIParameters()
    stream: bool | None = None


def parse_request(body: Any) -> LMIRequest:
    """Validate an LMI body."""
    try:
        return LMIRequest.model_validate(body)
    except ValidationError as exc:
        raise HTTPError(400, f"Invalid request: {describe_error(exc)}", "validation") from None


def sampling_params(p: LMIParameters, default_max_new_tokens: int) -> SamplingParams:
    """Translate LMI parameters (``max_new_tokens`` defaults to 30 as in LMI)."""
    # lmi-dist chose tokens as TGI does; LMI's top_k of 0 means "off".
    do_sample = implies_sampling(p.do_sample, p.temperature, p.top_k or None, p.top_p, p.typical_p)
    return SamplingParams(
        max_new_tokens=p.max_new_tokens or default_max_new_tokens,
        do_sample=do_sample,
        temperature=p.temperature,
        top_k=p.top_k if p.top_k else None,
        top_p=p.top_p,
        typical_p=p.typical_p,
        repetition_penalty=p.repetition_penalty,
        frequency_penalty=p.frequency_penalty,
        presence_penalty=p.presence_penalty,
        seed=p.seed,
        stop=list(p.stop_sequences or p.stop or []),
        include_stop_str_in_output=True,
        ignore_eos=p.ignore_eos_token or p.ignore_eos,
    )


def choose_formatter(configured: str, stream: bool | None) -> str:
    """An explicit ``option.output_formatter`` wins; else ``stream`` picks jsonlines."""
    if configured:
        return configured
    return "jsonlines" if stream else "json"


def _finish(event: TokenEvent) -> str:
    reason = event.finish_reason
    if reason is FinishReason.CANCELLED:
        return "abort"
    return reason.value if reason else "length"


class LMIStream:
    """Renders engine events in one LMI output format."""

    def __init__(self, formatter: str, jsonlines_format: str, details: bool, prefix: str) -> None:
        self.formatter = formatter
        self.jsonlines_format = jsonlines_format
        self.details = details
        self.prefix = prefix
        self.started = False

    def _token_line(self, event: TokenEvent) -> str:
        body: dict[str, Any] = {
            "token": {"id": event.id, "text": event.text, "log_prob": event.logprob}
        }
        if event.finish_reason is not None:
            body["generated_text"] = self.prefix + (event.generated_text or "")
            if self.details:
                body["details"] = {
                    "finish_reason": _finish(event),
                    "generated_tokens": event.generated_tokens,
                    "inputs": None,
                    "tokens": None,
                }
        return json.dumps(body, ensure_ascii=False)

    def render(self, event: TokenEvent) -> bytes:
        """The bytes to send for one event."""
        fmt = self.formatter
        if fmt == "jsonlines":
            if self.jsonlines_format == "outputs":
                # Byte-for-byte LMI 0.23: json.dumps with its default separators and
                # ASCII escapes, special tokens as "".
                return (json.dumps({"outputs": [event.text]}) + "\n").encode()
            return (self._token_line(event) + "\n").encode()
        if fmt == "sse":
            return ("data: " + self._token_line(event) + "\n\n").encode()
        if fmt == "json":
            piece = json.dumps(event.text)[1:-1]
            if not self.started:
                self.started = True
                piece = '{"generated_text": "' + json.dumps(self.prefix)[1:-1] + piece
            if event.finish_reason is not None:
                piece += '"}'
            return piece.encode()
        return event.text.encode()

    def render_error(self, message: str) -> bytes:
        """LMI's in-band error for a stream that already answered 200."""
        fmt = self.formatter
        if fmt == "jsonlines" and self.jsonlines_format == "outputs":
            return (json.dumps({"code": 424, "error": message}) + "\n").encode()
        line = json.dumps(
            {
                "token": {"id": -1, "text": "", "log_prob": -1, "special_token": True},
                "generated_text": "",
                "details": {
                    "finish_reason": "error",
                    "generated_tokens": 0,
                    "inputs": None,
                    "tokens": None,
                },
                "error": message,
            }
        )
        if fmt == "sse":
            return ("data: " + line + "\n\n").encode()
        if fmt == "json":
            return (
                ('{"generated_text": "' if not self.started else "") + '"}' + "\n" + line
            ).encode()
        return (line + "\n").encode()


def error_body(status: int, message: str, error_type: str) -> dict:
    """DJL Serving's error body."""
    return {"code": status, "type": error_type, "message": message}


def error_response(exc: HTTPError) -> Response:
    """DJL Serving's error body with the error's status."""
    return json_response(error_body(exc.status, exc.message, exc.error_type), exc.status)


# -- handlers ---------------------------------------------------------------------------------


async def predictions(request: Request) -> Response:
    """``POST /predictions/{model}`` and ``/models/{model}/invoke``: DJL Serving's routes."""
    body = await read_request_json(request)
    if server_of(request).custom is None and not isinstance(body, dict):
        raise HTTPError(400, "Invalid request: expected a JSON object", "validation")
    return await invoke(body, request)


async def invoke(body: Any, request: Request) -> Response:
    """Run an LMI body (or hand it to the custom ``model.py``), in the configured format."""
    server = server_of(request)
    if server.custom is not None:
        return await server.custom.invoke(request, body)
    req = parse_request(body)
    session = server.session_for(request)
    prompt = (session.text if session else "") + req.inputs
    params = sampling_params(req.parameters, server.config.lmi_default_max_new_tokens)
    formatter = choose_formatter(server.config.output_formatter, req.stream)
    if formatter == "tgi_compat":
        tgi_body = {
            "inputs": req.inputs,
            "parameters": body.get("parameters") or {},
            "stream": req.stream,
        }
        return await tgi.generate(tgi_body, request, compat=True)
    stream = server.submit(prompt, params)
    prefix = req.inputs if req.parameters.return_full_text else ""
    renderer = LMIStream(formatter, server.config.jsonlines_format, req.parameters.details, prefix)

    def render_event(event: TokenEvent) -> bytes:
        if session is not None and event.finish_reason is not None:
            session.text = prompt + (event.generated_text or "")
        if event.error is not None:
            return renderer.render_error(f"Request failed during generation: {event.error}")
        return renderer.render(event)

    if req.stream is False and formatter == "json":
        events = await collect(stream)
        for event in events:
            render_event(event)
        if events[-1].error is not None:
            raise HTTPError(424, events[-1].error, "generation")
        server.stats.success += 1
        return json_response({"generated_text": prefix + (events[-1].generated_text or "")})
    server.stats.success += 1
    media_type = CONTENT_TYPES[formatter]
    return streaming_response(
        stream,
        render_event,
        media_type=media_type,
        keepalive=None,
        interval=server.config.keepalive_interval,
        # As written: Starlette would add "; charset=utf-8" to text/event-stream.
        headers={"content-type": media_type, "X-Accel-Buffering": "no"},
    )


routes = [
    Route("/predictions/{model}", guarded(predictions, error_response), methods=["POST"]),
    Route("/models/{model}/invoke", guarded(predictions, error_response), methods=["POST"]),
]
