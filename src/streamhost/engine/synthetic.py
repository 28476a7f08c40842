"""``synthetic:DELAY_MS``: a weight-free model for load tests (no torch import).

Token ``n`` of every request (counting from 0) has id ``n`` and text ``"n "``, and is
emitted ``(n + 1) * DELAY_MS`` after the request arrived, so a lost, repeated or
reordered token is visible in the text and timing does not drift with load.
"""

from __future__ import annotations

import threading
import time

from streamhost.engine.types import Sample

SYNTHETIC_PREFIX = "synthetic:"
SYNTHETIC_CONTEXT = 1 << 20


def parse_synthetic(model_id: str) -> float | None:
    """Return the delay in seconds for a ``synthetic:DELAY_MS`` id, else ``None``."""
    if not model_id.startswith(SYNTHETIC_PREFIX):
        return None
    raw = model_id[len(SYNTHETIC_PREFIX) :]
    try:
        delay_ms = float(raw)
    except ValueError:
        raise ValueError(
            f"synthetic model needs a delay in ms, as synthetic:5; got {model_id!r}"
        ) from None
    if not 0 <= delay_ms <= 60_000:
        raise ValueError(f"synthetic delay must be between 0 and 60000 ms; got {raw}")
    return delay_ms / 1000.0


class SyntheticVocab:
    """Tokens are numbers: id ``n`` reads ``"n "``; no EOS, no special tokens."""

    eos_ids: frozenset[int] = frozenset()
    special_ids: frozenset[int] = frozenset()
    chat_template = None

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        """Text of a run of synthetic token ids."""
        return "".join(f"{i} " for i in ids)

    def token_text(self, token_id: int) -> str:
        """Text of one synthetic token."""
        return f"{token_id} "

    def encode(self, text: str) -> list[int]:
        """One prompt token per whitespace-separated word (at least one)."""
        words = text.split()
        return [len(w) for w in words] or [0]


class SyntheticRunner:
    """Emits each row's next token when it is due, sleeping in between."""

    def __init__(self, delay: float, wake: threading.Event) -> None:
        self.delay = delay
        self.wake = wake
        self.rows: list = []
        self._due: dict[int, float] = {}

    def add(self, rows: list) -> list:
        """Admit rows; their first token is due one delay after they arrived."""
        for row in rows:
            self._due[id(row)] = row.arrival + self.delay
        self.rows.extend(rows)
        return [None] * len(rows)

    def step(self) -> list:
        """Wait for the earliest due token (or a new arrival) and emit every due one."""
        wait = min(self._due[id(r)] for r in self.rows) - time.perf_counter()
        if wait > 0 and self.wake.wait(wait):
            self.wake.clear()
        now = time.perf_counter()
        samples: list[Sample | None] = []
        for row in self.rows:
            due = self._due[id(row)]
            if due <= now:
                samples.append(Sample(len(row.output_ids), 0.0))
                self._due[id(row)] = due + self.delay
            else:
                samples.append(None)
        return samples

    def remove(self, rows: list) -> None:
        """Drop rows."""
        gone = {id(r) for r in rows}
        self.rows = [r for r in self.rows if id(r) not in gone]
        for key in gone:
            self._due.pop(key, None)

    def reset(self) -> None:
        """Drop every row."""
        self.rows = []
        self._due.clear()
