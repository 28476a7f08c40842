"""Asking an endpoint from the terminal: ``streamhost invoke`` (one prompt; its answer on
stdout, its timings on stderr) and ``streamhost chat`` (a conversation kept in a stateful
session on the endpoint)."""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TextIO

from streamhost.command import CommandError
from streamhost.endpoints.bidi import BidiChannel, BidiGeneration
from streamhost.endpoints.clients import control_client, invocation_client
from streamhost.endpoints.conversation import turn_prompt
from streamhost.endpoints.discovery import EndpointInfo, describe_endpoint
from streamhost.endpoints.errors import describe_error, not_in_service
from streamhost.endpoints.invocation import (
    Generation,
    GenerationParameters,
    close_session,
    invoke,
    open_session,
    request_body,
    start_generation,
)

__all__ = ["CHAT_COMMANDS", "chat_command", "help_text", "run_chat", "run_invoke"]


def _ready_endpoint(sm: Any, name: str, api: str) -> EndpointInfo:
    info = describe_endpoint(sm, name)
    if not info.serving:
        raise CommandError(not_in_service(name, info.status, info.failure_reason))
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
    return _print_answer(start_generation(smr, endpoint, body, session_id=session_id), out, err)


def _print_answer(generation: Generation | BidiGeneration, out: TextIO, err: TextIO) -> bool:
    """`_stream_answer` from the generation on (a response stream's or a bidirectional
    stream's answer)."""
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


CHAT_COMMANDS = {
    "/help": "list these commands",
    "/new": "start a new conversation (the endpoint forgets this one)",
    "/exit": "leave (also /quit, or Ctrl-D); Ctrl-C stops an answer",
}
# A line is a command when its first word is a slash and letters: "/usr/bin?" is a question.
_COMMAND = re.compile(r"/[A-Za-z?]+")


def chat_command(line: str) -> str | None:
    """The command a chat line gives (``/help``, ``/x`` …), or ``None`` for a message."""
    words = line.split()
    return words[0].lower() if words and _COMMAND.fullmatch(words[0]) else None


def help_text() -> str:
    """What ``/help`` prints: each command and what it does."""
    width = max(len(name) for name in CHAT_COMMANDS)
    return "\n".join(f"  {name:<{width}}  {what}" for name, what in CHAT_COMMANDS.items())


class _Conversation:
    """One terminal conversation: its stateful session on the endpoint, and its commands."""

    def __init__(
        self,
        smr: Any,
        info: EndpointInfo,
        parameters: GenerationParameters,
        out: TextIO,
        err: TextIO,
    ) -> None:
        self.smr, self.info, self.parameters = smr, info, parameters
        self.out, self.err = out, err
        self.session = open_session(smr, info.name)
        self.first = True

    def command(self, name: str) -> bool:
        """Run a slash command, answered here (never sent to the model); False to leave."""
        if name in ("/exit", "/quit"):
            return False
        if name in ("/help", "/?"):
            self.err.write(f"Commands:\n{help_text()}\nAnything else is sent to the model.\n")
        elif name == "/new":
            self.restart()
            self.err.write("(new conversation)\n")
        else:
            self.err.write(f"unknown command {name}: /help lists the commands\n")
        return True

    def ask(self, message: str) -> None:
        """Send one message in the session and print the answer as it streams."""
        body = request_body(self.info.api, turn_prompt(message, first=self.first), self.parameters)
        self.out.write("bot> ")
        self.out.flush()
        try:
            if _stream_answer(
                self.smr, self.info.name, body, self.out, self.err, session_id=self.session
            ):
                self.first = False
        except Exception as error:
            if not _session_problem(error):
                raise
            self.session, self.first = open_session(self.smr, self.info.name), True
            self.err.write("(the session had ended; a new conversation started, ask again)\n")

    def restart(self) -> None:
        """Close the session and open a new one."""
        self.close()
        self.session, self.first = open_session(self.smr, self.info.name), True

    def close(self) -> None:
        """Close the session so the model server frees it."""
        with contextlib.suppress(Exception):
            close_session(self.smr, self.info.name, self.session)


class _BidiConversation(_Conversation):
    """One terminal conversation on one bidirectional stream (``--bidi``): the model server
    keeps the history for the stream's life, and Ctrl-C interrupts the answer on it."""

    def __init__(
        self,
        gateway_url: str,
        info: EndpointInfo,
        parameters: GenerationParameters,
        out: TextIO,
        err: TextIO,
    ) -> None:
        self.gateway_url, self.info, self.parameters = gateway_url, info, parameters
        self.out, self.err = out, err
        self.channel = BidiChannel(gateway_url, info.name)
        self.first = True

    def ask(self, message: str) -> None:
        """Send one turn on the stream and print the answer as it streams."""
        body = request_body(self.info.api, turn_prompt(message, first=self.first), self.parameters)
        self.out.write("bot> ")
        self.out.flush()
        if _print_answer(self.channel.generate(body), self.out, self.err):
            self.first = False

    def restart(self) -> None:
        """End this stream (the model server forgets it) and open a new one."""
        self.channel.close()
        self.channel, self.first = BidiChannel(self.gateway_url, self.info.name), True

    def close(self) -> None:
        """End the stream."""
        self.channel.close()


def run_chat(
    gateway_url: str,
    endpoint: str,
    *,
    parameters: GenerationParameters = GenerationParameters(),
    api: str = "auto",
    bidi: bool = False,
    read: Callable[[str], str] = input,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """``streamhost chat``: a conversation kept in a stateful session on the endpoint.

    Each turn sends only the new message with ``SessionId``; the model server prepends the
    history and routing sticks to the instance that holds it. Slash commands are answered
    here, never sent: ``/help`` lists them, ``/new`` starts over, ``/exit`` (or end of
    input) leaves and closes the session, any other is unknown. Ctrl-C stops an answer; an
    answer stopped early is not remembered by the session (the server keeps finished turns
    only). ``bidi``: the conversation is one bidirectional stream instead of a session
    (InvokeEndpointWithBidirectionalStream); Ctrl-C interrupts the answer on it.
    """
    out, err = out or sys.stdout, err or sys.stderr
    sm, smr = control_client(gateway_url), invocation_client(gateway_url)
    info = _ready_endpoint(sm, endpoint, api)
    conversation = (
        _BidiConversation(gateway_url, info, parameters, out, err)
        if bidi
        else _Conversation(smr, info, parameters, out, err)
    )
    err.write(
        f"Chatting with {endpoint} ({info.api.upper()} API). /help lists the commands, "
        "/exit leaves.\n"
    )
    try:
        while True:
            try:
                line = read("you> ")
            except (EOFError, KeyboardInterrupt):
                out.write("\n")
                break
            message = line.strip()
            command = chat_command(message)
            if command is not None:
                if not conversation.command(command):
                    break
            elif message:
                conversation.ask(message)
    finally:
        conversation.close()
    return 0
