"""Asking an endpoint from the terminal: ``streamhost invoke`` (one prompt; its answer on
stdout, its timings on stderr) and ``streamhost chat`` (a conversation kept in a stateful
session on the endpoint)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TextIO

from streamhost.command import CommandError
from streamhost.endpoints.clients import control_client, invocation_client
from streamhost.endpoints.conversation import turn_prompt
from streamhost.endpoints.discovery import IN_SERVICE, EndpointInfo, describe_endpoint
from streamhost.endpoints.errors import describe_error
from streamhost.endpoints.invocation import (
    GenerationParameters,
    close_session,
    invoke,
    open_session,
    request_body,
    start_generation,
)

__all__ = ["run_chat", "run_invoke"]


def _ready_endpoint(sm: Any, name: str, api: str) -> EndpointInfo:
    info = describe_endpoint(sm, name)
    if info.status != IN_SERVICE:
        detail = f": {info.failure_reason}" if info.failure_reason else ""
        raise CommandError(f"endpoint {name} is {info.status}, not InService{detail}")
    if api != "auto":
        return replace(info, api=api)
    return info


def _stats(
    ttft: float | None, tokens: int | None, rate: float | None, *, label: str = "TTFT"
) -> str:
    parts = [f"{label} {ttft:.3f} s" if ttft is not None else f"{label} -"]
    parts.append(f"{tokens} tokens" if tokens else "- tokens")
    parts.append(f"{rate:.1f} tokens/s" if rate is not None else "- tokens/s")
    return " · ".join(parts)


def _stream_answer(
    smr: Any,
    endpoint: str,
    body: bytes,
    out: TextIO,
    err: TextIO,
    *,
    session_id: str | None = None,
) -> bool:
    """Print the answer as it streams, then its timings on ``err``; False if Ctrl-C stopped it."""
    generation = start_generation(smr, endpoint, body, session_id=session_id)
    try:
        for text in generation:
            out.write(text)
            out.flush()
    except KeyboardInterrupt:
        generation.stop()
    out.write("\n")
    out.flush()
    note = " · stopped" if generation.stopped else ""
    err.write(
        _stats(generation.ttft, generation.tokens, generation.tokens_per_second) + note + "\n"
    )
    err.flush()
    return not generation.stopped


def run_invoke(
    gateway_url: str,
    endpoint: str,
    prompt: str,
    *,
    stream: bool = False,
    parameters: GenerationParameters = GenerationParameters(),
    api: str = "auto",
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """``streamhost invoke``: one prompt, its answer on ``out``, its timings on ``err``
    (default: stdout and stderr)."""
    out, err = out or sys.stdout, err or sys.stderr
    sm, smr = control_client(gateway_url), invocation_client(gateway_url)
    info = _ready_endpoint(sm, endpoint, api)
    body = request_body(info.api, prompt, parameters, stream=stream)
    if stream:
        return 0 if _stream_answer(smr, endpoint, body, out, err) else 130
    completion = invoke(smr, endpoint, body)
    out.write(completion.text + "\n")
    out.flush()
    err.write(
        _stats(completion.latency, completion.tokens, completion.tokens_per_second, label="latency")
        + "\n"
    )
    return 0


def _session_problem(error: BaseException) -> bool:
    """Whether an invocation failed because its session is unknown, expired or gone."""
    text = describe_error(error, "").lower()
    return "session" in text and ("not found" in text or "no longer" in text or "expired" in text)


def run_chat(
    gateway_url: str,
    endpoint: str,
    *,
    parameters: GenerationParameters = GenerationParameters(),
    api: str = "auto",
    read: Callable[[str], str] = input,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """``streamhost chat``: a conversation kept in a stateful session on the endpoint.

    Each turn sends only the new message with ``SessionId``; the model server prepends the
    history and routing sticks to the instance that holds it. ``/new`` starts over, ``/exit``
    (or end of input) leaves and closes the session. Ctrl-C stops an answer; an answer
    stopped early is not remembered by the session (the server keeps finished turns only).
    """
    out, err = out or sys.stdout, err or sys.stderr
    sm, smr = control_client(gateway_url), invocation_client(gateway_url)
    info = _ready_endpoint(sm, endpoint, api)
    session = open_session(smr, endpoint)
    first = True
    err.write(
        f"Chatting with {endpoint} ({info.api.upper()} API). /new starts over, /exit leaves.\n"
    )
    try:
        while True:
            try:
                line = read("you> ")
            except (EOFError, KeyboardInterrupt):
                out.write("\n")
                break
            message = line.strip()
            if not message:
                continue
            if message in ("/exit", "/quit"):
                break
            if message == "/new":
                with contextlib.suppress(Exception):
                    close_session(smr, endpoint, session)
                session, first = open_session(smr, endpoint), True
                err.write("(new conversation)\n")
                continue
            body = request_body(info.api, turn_prompt(message, first=first), parameters)
            out.write("bot> ")
            out.flush()
            try:
                if _stream_answer(smr, endpoint, body, out, err, session_id=session):
                    first = False
            except Exception as error:
                if not _session_problem(error):
                    raise
                session, first = open_session(smr, endpoint), True
                err.write("(the session had ended; a new conversation started, ask again)\n")
    finally:
        with contextlib.suppress(Exception):
            close_session(smr, endpoint, session)
    return 0
