"""The engine's public face: load a model, submit requests, iterate their tokens.

``Engine.submit`` validates and queues a request on the caller's event loop and returns a
:class:`RequestStream`, an async iterator of :class:`TokenEvent`. The forward passes run on
the scheduler thread; its events come back to the event loop in one callback per step.
Closing a stream before its last event cancels the request.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import threading
from typing import Any

from streamhost.engine.config import EngineConfig
from streamhost.engine.detokenizer import IncrementalDetokenizer, StopMatcher
from streamhost.engine.metrics import EngineMetrics
from streamhost.engine.scheduler import Scheduler, Sequence
from streamhost.engine.synthetic import (
    SYNTHETIC_CONTEXT,
    SyntheticRunner,
    SyntheticVocab,
    parse_synthetic,
)
from streamhost.engine.types import (
    EngineNotReady,
    OverloadedError,
    SamplingParams,
    TokenEvent,
)
from streamhost.engine.validation import (
    resolve_lengths,
    validate_inputs,
    validate_params,
    validate_token_ids,
    validate_truncate,
)

log = logging.getLogger("streamhost.engine")


class RequestStream:
    """The tokens of one request, as an async iterator; ``aclose()`` cancels it."""

    def __init__(self, engine: Engine, seq: Sequence | None, loop: asyncio.AbstractEventLoop):
        self._engine = engine
        self._loop = loop
        self._events: collections.deque[TokenEvent] = collections.deque()
        self._waiter: asyncio.Future | None = None
        self._done = False
        self.seq = seq

    @property
    def prompt_ids(self) -> list[int]:
        """The prompt as the engine tokenized (and truncated) it."""
        assert self.seq is not None
        return self.seq.prompt_ids

    @property
    def input_length(self) -> int:
        """Number of prompt tokens."""
        return len(self.prompt_ids)

    @property
    def max_new_tokens(self) -> int:
        """The generation budget after defaults were applied."""
        assert self.seq is not None
        return self.seq.max_new_tokens

    def _put(self, event: TokenEvent) -> None:
        # Runs on the event loop (scheduled by the scheduler thread).
        self._events.append(event)
        if event.finish_reason is not None:
            self._release()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _release(self) -> None:
        if not self._done:
            self._done = True
            self._engine._active -= 1

    def __aiter__(self) -> RequestStream:
        return self

    async def __anext__(self) -> TokenEvent:
        while not self._events:
            if self._done:
                raise StopAsyncIteration
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        event = self._events.popleft()
        if event.finish_reason is not None:
            # Nothing may follow the last event.
            self._events.clear()
        return event

    async def next_event(self, timeout: float | None = None) -> TokenEvent | None:
        """The next event, or ``None`` if none came within ``timeout`` seconds (keep-alive).

        Raises :class:`StopAsyncIteration` after the last event.
        """
        if not self._events:
            if self._done:
                raise StopAsyncIteration
            waiter = self._waiter = self._loop.create_future()
            timer = self._loop.call_later(timeout, _wake, waiter) if timeout else None
            try:
                await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
            if not self._events:
                if self._done:
                    raise StopAsyncIteration
                return None
        event = self._events.popleft()
        if event.finish_reason is not None:
            self._events.clear()
        return event

    def finished(self) -> bool:
        """True once the last event was delivered."""
        return self._done

    async def aclose(self) -> None:
        """Stop the request if it is still running (the client went away)."""
        self.close()

    def close(self) -> None:
        """Synchronous form of :meth:`aclose`."""
        if not self._done and self.seq is not None:
            self._engine._scheduler_cancel(self.seq)
            self._release()

    async def __aenter__(self) -> RequestStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class Engine:
    """Continuous-batching generation over one model."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.metrics = EngineMetrics()
        self.model: Any = None
        self.vocab: Any = None
        self.tokenizer: Any = None
        self.context_window = 0
        self.synthetic_delay = parse_synthetic(config.model)
        self.token_count: int | None = None  # rows of the embedding: valid ids are below
        self.load_error: str | None = None
        self.load_stages: dict[str, float] = {}  # seconds per stage of load_model, if known
        self._scheduler: Scheduler | None = None
        self._active = 0
        self._ids = itertools.count(1)
        self._ready = threading.Event()

    @classmethod
    def load(cls, config: EngineConfig) -> Engine:
        """Create an engine and load its model now (blocking)."""
        engine = cls(config)
        engine.load_model()
        return engine

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Begin loading where that can overlap the caller's own start; :meth:`load_model`
        finishes it. (Nothing to begin here; the engine process begins its own.)"""

    def load_model(self) -> None:
        """Load the model and start the scheduler thread (blocking; call off the loop)."""
        wake = threading.Event()
        device_type = "cpu"
        if self.synthetic_delay is not None:
            self.vocab = SyntheticVocab()
            self.context_window = SYNTHETIC_CONTEXT
            runner: Any = SyntheticRunner(self.synthetic_delay, wake)
        else:
            from streamhost.engine.loader import load_model, make_runner

            self.model = load_model(self.config)
            self.vocab = self.model.vocab
            self.tokenizer = self.model.tokenizer
            self.context_window = self.model.context_window
            self.token_count = self.model.token_count
            runner = make_runner(self.model.model, self.model.device, self.config.fast_path)
            device_type = self.model.device.type
        self.config.resolve_limits(self.context_window, device_type)
        self._scheduler = Scheduler(
            runner, self.vocab, self.config, self.metrics, self._dispatch, wake
        )
        self._scheduler.start()
        self._ready.set()

    @property
    def ready(self) -> bool:
        """True once the model is loaded and requests are accepted."""
        return self._ready.is_set()

    def shutdown(self) -> None:
        """Stop the scheduler; running requests end with ``cancelled``."""
        if self._scheduler is not None:
            self._scheduler.stop()

    @property
    def active_requests(self) -> int:
        """Requests submitted and not yet finished (queued or running)."""
        return self._active

    # -- text helpers -------------------------------------------------------------------------

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Tokenize ``text`` as the model's tokenizer does."""
        if self.synthetic_delay is not None:
            return self.vocab.encode(text)
        return self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]

    def offsets(self, text: str) -> list[tuple[int, str, int, int]]:
        """``(id, text, start, stop)`` per token, with character offsets (for /tokenize)."""
        if self.synthetic_delay is not None:
            out, pos = [], 0
            for word in text.split():
                start = text.index(word, pos)
                pos = start + len(word)
                out.append((len(word), word, start, pos))
            return out
        enc = self.tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
        return [
            (tid, text[a:b], a, b)
            for tid, (a, b) in zip(enc["input_ids"], enc["offset_mapping"], strict=True)
        ]

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """Render a conversation with the model's chat template (or a plain fallback)."""
        template = getattr(self.tokenizer, "chat_template", None) if self.tokenizer else None
        if template:
            return self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=add_generation_prompt
            )
        lines = [f"{m.get('role', 'user')}: {m.get('content') or ''}" for m in messages]
        if add_generation_prompt:
            lines.append("assistant:")
        return "\n".join(lines)

    # -- requests ---------------------------------------------------------------------------

    def submit(
        self,
        prompt: str | list[int],
        params: SamplingParams,
        *,
        add_special_tokens: bool = True,
    ) -> RequestStream:
        """Validate and queue a request; raise before queueing if it cannot run.

        Raises :class:`ValidationError` (TGI's messages), :class:`OverloadedError` when
        ``max_concurrent_requests`` are in flight, :class:`EngineNotReady` while loading.
        Must be called on the event loop that will iterate the returned stream.
        """
        if not self.ready or self._scheduler is None:
            raise EngineNotReady(self.load_error or "model is loading")
        config = self.config
        validate_params(params, config)
        if isinstance(prompt, str):
            validate_inputs(prompt, None)
            validate_truncate(params, config)
            ids = self.encode(prompt, add_special_tokens)
        else:
            validate_inputs(None, prompt)
            validate_truncate(params, config)
            ids = list(prompt)
            validate_token_ids(ids, self.token_count)
        if params.truncate is not None and len(ids) > params.truncate:
            ids = ids[-params.truncate :]
        max_new = resolve_lengths(len(ids), params, config)
        if self._active >= config.max_concurrent_requests:
            raise OverloadedError()
        loop = asyncio.get_running_loop()
        stream = RequestStream(self, None, loop)
        seq = Sequence(
            request_id=next(self._ids),
            prompt_ids=ids,
            params=params,
            max_new_tokens=max_new,
            sampler=self._sampler(params),
            detokenizer=IncrementalDetokenizer(self.vocab),
            stops=StopMatcher(list(params.stop), params.include_stop_str_in_output),
            deliver=stream._put,
            loop=loop,
        )
        stream.seq = seq
        self._active += 1
        self.metrics.requests += 1
        self._scheduler.submit(seq)
        return stream

    def _sampler(self, params: SamplingParams) -> Any:
        if self.synthetic_delay is not None:
            return _SyntheticSampler(params)
        from streamhost.engine.sampling import RowSampler

        return RowSampler(params)

    def _scheduler_cancel(self, seq: Sequence) -> None:
        if self._scheduler is not None:
            self._scheduler.cancel(seq)

    def _dispatch(self, events: list[tuple[Sequence, TokenEvent]]) -> None:
        # Called on the scheduler thread: one wake-up per event loop per step.
        by_loop: dict[Any, list[tuple[Sequence, TokenEvent]]] = {}
        for seq, event in events:
            by_loop.setdefault(seq.loop, []).append((seq, event))
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, items)
            except RuntimeError:  # that loop is closed: nobody is listening
                pass


class _SyntheticSampler:
    __slots__ = ("params", "seed")

    def __init__(self, params: SamplingParams) -> None:
        self.params = params
        self.seed = params.seed if params.do_sample else None


def _wake(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _deliver(items: list[tuple[Sequence, TokenEvent]]) -> None:
    for seq, event in items:
        seq.deliver(event)
