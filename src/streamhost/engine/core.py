"""Our own engine: continuous batching in PyTorch, behind :class:`GenerationEngine`.

``Engine.submit`` validates and queues a request on the caller's event loop and returns a
:class:`RequestStream`, an async iterator of :class:`TokenEvent`. The forward passes run
on a scheduler thread, here (:class:`ThreadHost`) or in a child process
(:class:`streamhost.engine.process.ProcessHost`); its events come back to the event loop
in one callback per step. Closing a stream before its last event cancels the request.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from streamhost.engine.config import EngineConfig
from streamhost.engine.detokenizer import IncrementalDetokenizer, StopMatcher
from streamhost.engine.metrics import EngineMetrics
from streamhost.engine.protocol import ModelInfo
from streamhost.engine.scheduler import Scheduler, Sequence
from streamhost.engine.stream import RequestStream
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
from streamhost.engine.validation import prepare_request

log = logging.getLogger("streamhost.engine")


@dataclass
class Loaded:
    """What a host hands the engine once its model is loaded."""

    vocab: Any
    info: ModelInfo
    context_window: int
    tokenizer: Any = None
    token_count: int | None = None  # rows of the embedding: valid ids are below
    model: Any = None  # the LoadedModel, when it lives in this process
    stages: dict[str, float] = field(default_factory=dict)


class Host(Protocol):
    """Where the scheduler runs: a thread here, or a child process."""

    metrics: EngineMetrics

    def start(self) -> None: ...
    def load(self) -> Loaded: ...
    def submit(self, seq: Sequence) -> None: ...
    def cancel(self, seq: Sequence) -> None: ...
    def stop(self) -> None: ...


class SchedulerHost:
    """What both hosts share: requests go to their scheduler (a thread here, or the child
    process's stand-in), once `load` has made it."""

    _scheduler: Any = None

    def submit(self, seq: Sequence) -> None:
        """Queue a validated request."""
        assert self._scheduler is not None
        self._scheduler.submit(seq)

    def cancel(self, seq: Sequence) -> None:
        """Drop a request."""
        if self._scheduler is not None:
            self._scheduler.cancel(seq)

    def stop(self) -> None:
        """Stop the scheduler; requests still running end with ``cancelled``."""
        if self._scheduler is not None:
            self._scheduler.stop()


class ThreadHost(SchedulerHost):
    """The model and its scheduler thread in this process (tests, the synthetic model)."""

    def __init__(self, config: EngineConfig, dispatch: Any) -> None:
        self.config = config
        self.metrics = EngineMetrics()
        self._dispatch = dispatch
        self._scheduler: Scheduler | None = None

    def start(self) -> None:
        """Nothing to begin ahead of :meth:`load`."""

    def load(self) -> Loaded:
        """Load the model here and start the scheduler thread."""
        config = self.config
        wake = threading.Event()
        delay = parse_synthetic(config.model)
        if delay is not None:
            loaded = Loaded(
                vocab=SyntheticVocab(),
                info=ModelInfo(config.model, context_window=SYNTHETIC_CONTEXT),
                context_window=SYNTHETIC_CONTEXT,
            )
            runner: Any = SyntheticRunner(delay, wake)
            device_type = "cpu"
        else:
            from streamhost.engine.loader import load_model, make_runner

            model = load_model(config)
            loaded = Loaded(
                vocab=model.vocab,
                info=ModelInfo(
                    model.model_id, model.dtype, str(model.device), model.sha, model.context_window
                ),
                context_window=model.context_window,
                tokenizer=model.tokenizer,
                token_count=model.token_count,
                model=model,
            )
            runner = make_runner(model.model, model.device, config.fast_path)
            device_type = model.device.type
        config.resolve_limits(loaded.context_window, device_type)
        self._scheduler = Scheduler(
            runner, loaded.vocab, config, self.metrics, self._dispatch, wake
        )
        self._scheduler.start()
        return loaded


class Engine:
    """Continuous-batching generation over one model (our own engine).

    ``process=True`` runs the model and scheduler in a child process, so forward passes
    never compete with HTTP for the GIL; the synthetic model, which has no weights,
    always runs on a thread here.
    """

    name = "builtin"

    def __init__(self, config: EngineConfig, *, process: bool = False) -> None:
        self.config = config
        self.synthetic_delay = parse_synthetic(config.model)
        self.model: Any = None  # the LoadedModel, when it lives in this process
        self.model_info: ModelInfo | None = None
        self.vocab: Any = None
        self.tokenizer: Any = None
        self.context_window = 0
        self.token_count: int | None = None  # rows of the embedding: valid ids are below
        self.load_stages: dict[str, float] = {}  # seconds per stage of load_model, if known
        self._error: str | None = None
        self._active = 0
        self._ids = itertools.count(1)
        self._ready = threading.Event()
        self._host: Host
        if process and self.synthetic_delay is None:
            from streamhost.engine.process import ProcessHost

            self._host = ProcessHost(config, self._dispatch, self._lost)
        else:
            self._host = ThreadHost(config, self._dispatch)

    @classmethod
    def load(cls, config: EngineConfig, *, process: bool = False) -> Engine:
        """Create an engine and load its model now (blocking)."""
        engine = cls(config, process=process)
        engine.load_model()
        return engine

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Begin loading where that can overlap the caller's own start (the engine process
        starts its imports and model load); :meth:`load_model` finishes it."""
        self._host.start()

    def load_model(self) -> None:
        """Load the model and start the scheduler (blocking; call off the loop)."""
        loaded = self._host.load()
        self.vocab = loaded.vocab
        self.tokenizer = loaded.tokenizer
        self.model = loaded.model
        self.model_info = loaded.info
        self.context_window = loaded.context_window
        self.token_count = loaded.token_count
        self.load_stages = loaded.stages
        self._ready.set()

    def _lost(self, reason: str) -> None:
        # The host can no longer run requests (its process exited).
        self._error = reason
        self._ready.clear()

    @property
    def ready(self) -> bool:
        """True once the model is loaded and requests are accepted."""
        return self._ready.is_set()

    @property
    def metrics(self) -> EngineMetrics:
        """The scheduler's counters, gauges and histograms."""
        return self._host.metrics

    def shutdown(self) -> None:
        """Stop the scheduler; running requests end with ``cancelled``."""
        self._host.stop()

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

    def token_text(self, token_id: int) -> str:
        """One token's own text."""
        return self.vocab.token_text(token_id)

    def offsets(self, text: str) -> list[tuple[int, str, int, int]]:
        """``(id, text, start, stop)`` per token, with character offsets (for /tokenize)."""
        if self.synthetic_delay is not None:
            out, pos = [], 0
            for word in text.split():
                start = text.index(word, pos)
                pos = start + len(word)
                out.append((len(word), word, start, pos))
            return out
        return token_offsets(self.tokenizer, text)

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """Render a conversation with the model's chat template (or a plain fallback)."""
        return render_chat(self.tokenizer, messages, add_generation_prompt)

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
        if not self.ready:
            raise EngineNotReady(self._error or "model is loading")
        config = self.config
        ids, max_new = prepare_request(
            prompt,
            params,
            config,
            lambda text: self.encode(text, add_special_tokens),
            self.token_count,
        )
        if self._active >= config.max_concurrent_requests:
            raise OverloadedError()
        loop = asyncio.get_running_loop()
        seq = Sequence(
            request_id=next(self._ids),
            prompt_ids=ids,
            params=params,
            max_new_tokens=max_new,
            sampler=self._sampler(params),
            detokenizer=IncrementalDetokenizer(self.vocab),
            stops=StopMatcher(list(params.stop), params.include_stop_str_in_output),
            deliver=_nowhere,
            loop=loop,
        )
        stream = RequestStream(
            loop, ids, max_new, cancel=lambda: self._host.cancel(seq), release=self._release
        )
        seq.deliver = stream.put
        self._active += 1
        self.metrics.requests += 1
        self._host.submit(seq)
        return stream

    def _release(self) -> None:
        self._active -= 1

    def _sampler(self, params: SamplingParams) -> Any:
        if isinstance(self._host, ThreadHost):
            if self.synthetic_delay is not None:
                return _SyntheticSampler(params)
            from streamhost.engine.sampling import RowSampler

            return RowSampler(params)
        return None  # sampling state lives with the model, in the child

    def _dispatch(self, events: list[tuple[Sequence, TokenEvent]]) -> None:
        # Called on the scheduler's thread: one wake-up per event loop per step.
        by_loop: dict[Any, list[tuple[Sequence, TokenEvent]]] = {}
        for seq, event in events:
            by_loop.setdefault(seq.loop, []).append((seq, event))
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, items)
            except RuntimeError:  # that loop is closed: nobody is listening
                pass


def token_offsets(tokenizer: Any, text: str) -> list[tuple[int, str, int, int]]:
    """``(id, text, start, stop)`` per token of ``text`` through ``tokenizer`` (every
    engine's /tokenize)."""
    enc = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
    return [
        (tid, text[a:b], a, b)
        for tid, (a, b) in zip(enc["input_ids"], enc["offset_mapping"], strict=True)
    ]


def render_chat(tokenizer: Any, messages: list[dict], add_generation_prompt: bool = True) -> str:
    """A conversation through ``tokenizer``'s chat template, or ``role: content`` lines
    when it has none (every engine renders chats through this one function)."""
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )
    lines = [f"{m.get('role', 'user')}: {m.get('content') or ''}" for m in messages]
    if add_generation_prompt:
        lines.append("assistant:")
    return "\n".join(lines)


class _SyntheticSampler:
    __slots__ = ("params", "seed")

    def __init__(self, params: SamplingParams) -> None:
        self.params = params
        self.seed = params.seed if params.do_sample else None


def _nowhere(event: TokenEvent) -> None:
    pass


def _deliver(items: list[tuple[Sequence, TokenEvent]]) -> None:
    for seq, event in items:
        seq.deliver(event)
