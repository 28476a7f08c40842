"""A conversation as plain data, and the prompt text a completion model is given for it.

TGI's and LMI's streaming APIs take one ``inputs`` string, so a conversation is rendered as
``User:`` / ``Assistant:`` lines. The chat UI keeps the turns itself and renders them all
on every request (a stopped answer stays part of the conversation, and clearing it is
purely local); ``streamhost chat`` sends only the new turn inside a stateful session and
the model server prepends the history, which it renders the same way.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["MAX_PROMPT_CHARS", "Turn", "clean_text", "render_prompt", "turn_prompt"]

MAX_PROMPT_CHARS = 6000
"""History beyond this many characters is dropped, oldest turns first, so that a long
conversation does not outgrow the model's input limit (the built-in ``tiny`` takes 3072
tokens of input next to 1024 new ones)."""

# C0/C1 control characters other than tab and newline: a random model emits them, and they
# render as boxes or not at all.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


@dataclass
class Turn:
    """One exchange: what the user asked, what came back, and how fast it came."""

    user: str
    assistant: str = ""
    stopped: bool = False
    error: str | None = None
    ttft: float | None = None
    tokens: int = 0
    tokens_per_second: float | None = None


def turn_prompt(message: str, *, first: bool = True) -> str:
    """The text of one new user turn, ending where the assistant's answer starts."""
    return ("" if first else "\n") + f"User: {message.strip()}\nAssistant:"


def render_prompt(turns: Sequence[Turn], message: str, *, max_chars: int = MAX_PROMPT_CHARS) -> str:
    """The prompt for ``message`` after ``turns``, keeping as many recent turns as fit."""
    current = turn_prompt(message)
    kept: list[str] = []
    size = len(current)
    for turn in reversed(turns):
        if turn.error is not None and not turn.assistant:
            continue  # a failed request taught the model nothing
        rendered = turn_prompt(turn.user) + " " + turn.assistant.strip() + "\n"
        if size + len(rendered) > max_chars:
            break
        kept.append(rendered)
        size += len(rendered)
    return "".join(reversed(kept)) + current


def clean_text(text: str) -> str:
    """``text`` without control characters that would not display."""
    return _CONTROL.sub("", text)
