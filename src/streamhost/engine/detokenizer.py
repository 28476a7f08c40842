"""Incremental detokenization and stop-sequence matching for one request.

Text deltas are UTF-8 safe: a token that completes only part of a character contributes
nothing until the character is whole (TGI's hold-on-U+FFFD rule), and the deltas of a
request always concatenate to exactly its final text.
"""

from __future__ import annotations

from typing import Protocol

REPLACEMENT = "\ufffd"


class Decoder(Protocol):
    """The part of a tokenizer the detokenizer needs."""

    def decode(self, ids: list[int], skip_special_tokens: bool = ...) -> str: ...


class IncrementalDetokenizer:
    """Turns a growing list of generated token ids into text deltas.

    It decodes a short window ``ids[prefix:]`` and emits what it adds beyond
    ``ids[prefix:read]``, so tokenizers whose decode of a lone token differs from its
    decode in context (SentencePiece spaces, byte-level fragments) stream correctly.
    """

    __slots__ = ("_ids", "_prefix", "_read", "decoder", "text")

    def __init__(self, decoder: Decoder) -> None:
        self.decoder = decoder
        self._ids: list[int] = []
        self._prefix = 0
        self._read = 0
        self.text = ""

    def add(self, token_id: int) -> str:
        """Append a (non-special) token; return the text it completes, possibly empty."""
        self._ids.append(token_id)
        decode = self.decoder.decode
        prefix_text = (
            decode(self._ids[self._prefix : self._read]) if self._read > self._prefix else ""
        )
        new_text = decode(self._ids[self._prefix :])
        if len(new_text) > len(prefix_text) and not new_text.endswith(REPLACEMENT):
            delta = new_text[len(prefix_text) :]
            self._prefix = self._read
            self._read = len(self._ids)
            self.text += delta
            return delta
        return ""

    def flush(self) -> str:
        """Text still held back at the end (an incomplete character decodes as U+FFFD)."""
        if self._read == len(self._ids):
            return ""
        prefix_text = decode_or_empty(self.decoder, self._ids[self._prefix : self._read])
        new_text = self.decoder.decode(self._ids[self._prefix :])
        delta = new_text[len(prefix_text) :]
        self._prefix = self._read = len(self._ids)
        self.text += delta
        return delta


def decode_or_empty(decoder: Decoder, ids: list[int]) -> str:
    """Decode ``ids``, or return "" for none."""
    return decoder.decode(ids) if ids else ""


class StopMatcher:
    """Finds stop sequences in the generated text, across token boundaries.

    With ``include`` (TGI and LMI semantics) the stop string stays in the output; without
    it (OpenAI semantics) the output ends before it, and any tail that could still grow
    into a stop string is held back so it never reaches the client.
    """

    __slots__ = ("_longest", "include", "stops")

    def __init__(self, stops: list[str], include: bool) -> None:
        self.stops = stops
        self.include = include
        self._longest = max((len(s) for s in stops), default=0)

    def find(self, text: str, new_from: int) -> int | None:
        """Return where the output must end if a stop sequence completes after ``new_from``."""
        if not self.stops:
            return None
        start = max(0, new_from - self._longest + 1)
        best: int | None = None
        for stop in self.stops:
            pos = text.find(stop, start)
            if pos != -1:
                end = pos + len(stop) if self.include else pos
                if best is None or end < best:
                    best = end
        return best

    def held_back(self, text: str) -> int:
        """Length of the tail of ``text`` to withhold because it may begin a stop string."""
        if self.include or not self.stops:
            return 0
        held = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(text)), held, -1):
                if text.endswith(stop[:k]):
                    held = k
                    break
        return held
