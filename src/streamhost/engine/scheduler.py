"""Continuous batching: one loop, on its own thread, owns the running batch.

Each iteration takes new submissions and cancellations, admits waiting requests within
the batch and prefill-token budgets, prefills them (their first token goes out at once),
then runs one decode step for the whole batch. Finished and cancelled requests leave the
batch immediately, so their slot is free for the next iteration. The scheduler decides;
the runner executes; neither knows about HTTP.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from streamhost.engine.config import EngineConfig
from streamhost.engine.detokenizer import IncrementalDetokenizer, StopMatcher
from streamhost.engine.metrics import EngineMetrics
from streamhost.engine.types import FinishReason, SamplingParams, TokenEvent, TopToken

log = logging.getLogger("streamhost.engine")


class Runner(Protocol):
    """Executes forward passes over the running batch (see :mod:`runner`)."""

    rows: list

    def add(self, rows: list) -> list: ...
    def step(self) -> list: ...
    def remove(self, rows: list) -> None: ...
    def reset(self) -> None: ...


class Vocabulary(Protocol):
    """What the scheduler needs to know about tokens."""

    eos_ids: frozenset[int]
    special_ids: frozenset[int]

    def decode(self, ids: list[int], skip_special_tokens: bool = ...) -> str: ...
    def token_text(self, token_id: int) -> str: ...


@dataclass(eq=False)
class Sequence:
    """One request's state inside the engine (plain data)."""

    request_id: int
    prompt_ids: list[int]
    params: SamplingParams
    max_new_tokens: int
    sampler: Any
    detokenizer: IncrementalDetokenizer
    stops: StopMatcher
    deliver: Callable[[TokenEvent], None]
    arrival: float = field(default_factory=time.perf_counter)
    output_ids: list[int] = field(default_factory=list)
    emitted: int = 0  # characters of detokenizer.text already sent
    first_token_at: float | None = None
    cancelled: bool = False
    finished: bool = False
    loop: Any = None  # the event loop the request's events go back to


class Scheduler:
    """Owns the waiting queue and the running batch; runs on a dedicated thread."""

    def __init__(
        self,
        runner: Runner,
        vocab: Vocabulary,
        config: EngineConfig,
        metrics: EngineMetrics,
        dispatch: Callable[[list[tuple[Sequence, TokenEvent]]], None],
        wake: threading.Event | None = None,
    ) -> None:
        self.runner = runner
        self.vocab = vocab
        self.config = config
        self.metrics = metrics
        self.dispatch = dispatch
        self.waiting: collections.deque[Sequence] = collections.deque()
        self._inbox: collections.deque[Sequence] = collections.deque()
        self._cancels: collections.deque[Sequence] = collections.deque()
        self._wake = wake or threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="streamhost-scheduler", daemon=True)

    # -- called from other threads ------------------------------------------------------

    def start(self) -> None:
        """Start the scheduler thread."""
        self._thread.start()

    def submit(self, seq: Sequence) -> None:
        """Queue a validated request; it joins the batch at the next step boundary."""
        self._inbox.append(seq)
        self._wake.set()

    def cancel(self, seq: Sequence) -> None:
        """Remove a request (its client went away) within one step."""
        seq.cancelled = True
        self._cancels.append(seq)
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loop; requests still inside end with ``cancelled``."""
        self._stop = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # -- the loop -------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop:
            if not (self._inbox or self._cancels or self.waiting or self.runner.rows):
                self._wake.wait()
                self._wake.clear()
                continue
            try:
                self._iteration()
            except Exception as exc:  # the model raised: fail the batch, keep serving
                log.exception("generation step failed")
                self._fail_all(exc)
        self._drain_on_stop()

    def _iteration(self) -> None:
        self._take_inbox()
        new = self._admit()
        metrics = self.metrics
        metrics.queue_size = len(self.waiting)
        if new:
            started = time.perf_counter()
            try:
                samples = self.runner.add(new)
            except Exception as exc:
                # They are in neither the queue nor the batch: fail them here, or their
                # clients would wait forever (the loop then fails the batch).
                self._fail(new, exc)
                raise
            metrics.observe_prefill(time.perf_counter() - started, len(new))
            metrics.batch_size = len(self.runner.rows)
            self._emit(new, samples)
        if self.runner.rows:
            started = time.perf_counter()
            samples = self.runner.step()
            metrics.observe_decode(time.perf_counter() - started, len(self.runner.rows))
            self._emit(self.runner.rows, samples)
        metrics.queue_size = len(self.waiting)
        metrics.batch_size = len(self.runner.rows)

    def _take_inbox(self) -> None:
        while self._inbox:
            self.waiting.append(self._inbox.popleft())
        if not self._cancels:
            return
        gone = []
        while self._cancels:
            seq = self._cancels.popleft()
            if seq.finished:
                continue
            gone.append(seq)
        if not gone:
            return
        gone_ids = {id(s) for s in gone}
        self.waiting = collections.deque(s for s in self.waiting if id(s) not in gone_ids)
        events = []
        for seq in gone:
            seq.finished = True
            self.metrics.finished(FinishReason.CANCELLED)
            events.append((seq, self._final_event(seq, FinishReason.CANCELLED, None)))
        try:
            self.runner.remove(gone)
            self.metrics.batch_size = len(self.runner.rows)
        finally:
            self.dispatch(events)

    def _admit(self) -> list[Sequence]:
        budget = self.config.max_batch_prefill_tokens
        room = self.config.max_batch_size - len(self.runner.rows)
        new: list[Sequence] = []
        while self.waiting and len(new) < room:
            seq = self.waiting[0]
            if new and len(seq.prompt_ids) > budget:
                break
            budget -= len(seq.prompt_ids)
            new.append(self.waiting.popleft())
        return new

    # -- turning samples into events ------------------------------------------------------

    def _emit(self, rows: list[Sequence], samples: list) -> None:
        events: list[tuple[Sequence, TokenEvent]] = []
        done: list[Sequence] = []
        now = time.perf_counter()
        for seq, sample in zip(list(rows), samples, strict=True):
            if sample is None or seq.finished:
                continue
            event = self._advance(seq, sample, now)
            events.append((seq, event))
            if event.finish_reason is not None:
                done.append(seq)
        try:
            if done:
                self.runner.remove(done)
                self.metrics.batch_size = len(self.runner.rows)
        finally:
            # Finished requests get their last event even if the runner failed to let them
            # go (the loop then fails the rest of the batch).
            if events:
                self.dispatch(events)

    def _advance(self, seq: Sequence, sample, now: float) -> TokenEvent:
        token_id = sample.token_id
        seq.output_ids.append(token_id)
        if seq.first_token_at is None:
            seq.first_token_at = now
            self.metrics.observe_ttft(now - seq.arrival)
        self.metrics.generated_tokens += 1
        vocab = self.vocab
        special = token_id in vocab.special_ids
        finish: FinishReason | None = None
        if token_id in vocab.eos_ids and not seq.params.ignore_eos:
            finish = FinishReason.EOS_TOKEN
        det = seq.detokenizer
        before = len(det.text)
        if not special:
            det.add(token_id)
        if finish is None and len(seq.output_ids) >= seq.max_new_tokens:
            finish = FinishReason.LENGTH
        if finish is None and len(seq.prompt_ids) + len(seq.output_ids) >= self._context_limit():
            finish = FinishReason.LENGTH
        end = len(det.text)
        if finish is not None:
            det.flush()
            end = len(det.text)
        cut = seq.stops.find(det.text, before)
        if cut is not None:
            finish = FinishReason.STOP_SEQUENCE
            end = cut
        elif finish is None:
            end -= seq.stops.held_back(det.text)
        delta = det.text[seq.emitted : max(end, seq.emitted)]
        seq.emitted = max(end, seq.emitted)
        top = None
        if sample.top:
            top = [
                TopToken(tid, vocab.token_text(tid), lp, tid in vocab.special_ids)
                for tid, lp in sample.top
            ]
        event = TokenEvent(
            index=len(seq.output_ids),
            id=token_id,
            text=delta,
            token_text=vocab.token_text(token_id) if special else delta,
            logprob=sample.logprob if seq.params.logprobs else None,
            special=special,
            top_tokens=top,
            generated_tokens=len(seq.output_ids),
            input_length=len(seq.prompt_ids),
        )
        if finish is not None:
            seq.finished = True
            event.finish_reason = finish
            event.generated_text = det.text[:end]
            event.seed = getattr(seq.sampler, "seed", None)
            self.metrics.finished(finish)
        return event

    def _context_limit(self) -> int:
        return self.config.max_total_tokens or 1 << 62

    def _final_event(self, seq: Sequence, reason: FinishReason, error: str | None) -> TokenEvent:
        text = seq.detokenizer.text[: seq.emitted]
        return TokenEvent(
            index=len(seq.output_ids) + 1,
            id=-1,
            text="",
            token_text="",
            logprob=None,
            special=True,
            finish_reason=reason,
            generated_text=text,
            generated_tokens=len(seq.output_ids),
            input_length=len(seq.prompt_ids),
            seed=getattr(seq.sampler, "seed", None),
            error=error,
        )

    def _fail_all(self, exc: Exception) -> None:
        victims = list(self.runner.rows)
        self.runner.reset()
        self._fail(victims, exc)

    def _fail(self, victims: list[Sequence], exc: Exception) -> None:
        events = []
        for seq in victims:
            if seq.finished:
                continue
            seq.finished = True
            self.metrics.finished(FinishReason.ERROR)
            events.append((seq, self._final_event(seq, FinishReason.ERROR, str(exc) or repr(exc))))
        if events:
            self.dispatch(events)

    def _drain_on_stop(self) -> None:
        self._take_inbox()
        victims = list(self.waiting) + [s for s in self.runner.rows if not s.finished]
        self.waiting.clear()
        self.runner.reset()
        events = []
        for seq in victims:
            seq.finished = True
            events.append((seq, self._final_event(seq, FinishReason.CANCELLED, None)))
        if events:
            self.dispatch(events)
