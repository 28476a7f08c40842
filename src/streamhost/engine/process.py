"""The engine in its own process, so forward passes never compete with HTTP for the GIL.

:class:`ProcessEngine` is an :class:`Engine` whose scheduler lives in a child process.
The parent keeps the tokenizer (validation and token counts happen before any 200 is
sent) and a thin record of each request; the child owns the model, the batch and the
detokenizers. One pipe carries submissions and cancellations down and, per decode step,
one message with every event of that step up.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
import time
from dataclasses import replace
from typing import Any

from streamhost.engine.config import EngineConfig
from streamhost.engine.core import Engine
from streamhost.engine.metrics import EngineMetrics
from streamhost.engine.scheduler import Sequence
from streamhost.engine.types import FinishReason, SamplingParams, TokenEvent

log = logging.getLogger("streamhost.engine")

METRICS_INTERVAL = 0.5  # seconds between metric snapshots sent up by the child
# How the child ends when it is stopped with the rest of its process group (the gateway,
# `up` and service managers signal the group): a requested stop, not a failure.
_STOP_SIGNALS = {-signal.SIGTERM: "SIGTERM", -signal.SIGHUP: "SIGHUP"}


class RemoteScheduler:
    """The parent's stand-in for the scheduler: forwards requests over the pipe."""

    def __init__(self, engine: ProcessEngine, conn: Any, process: multiprocessing.Process) -> None:
        self.engine = engine
        self.conn = conn
        self.process = process
        self.requests: dict[int, Sequence] = {}
        self._send_lock = threading.Lock()
        self._reader = threading.Thread(
            target=self._read, name="streamhost-engine-reader", daemon=True
        )

    def start(self) -> None:
        """Start reading the child's messages."""
        self._reader.start()

    def _send(self, message: tuple) -> None:
        with self._send_lock:
            self.conn.send(message)

    def submit(self, seq: Sequence) -> None:
        """Send a validated request to the child."""
        self.requests[seq.request_id] = seq
        self._send(("submit", seq.request_id, seq.prompt_ids, seq.params, seq.max_new_tokens))

    def cancel(self, seq: Sequence) -> None:
        """Ask the child to drop a request."""
        if seq.request_id in self.requests:
            self._send(("cancel", seq.request_id))

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the child; requests still inside end with ``cancelled``."""
        try:
            self._send(("stop",))
        except (OSError, ValueError):
            pass
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self._reader.join(timeout)

    def _read(self) -> None:
        # Runs on a thread of the parent: one message per decode step.
        try:
            while True:
                message = self.conn.recv()
                kind = message[0]
                if kind == "events":
                    items = []
                    for request_id, event in message[1]:
                        seq = self.requests.get(request_id)
                        if seq is None:
                            continue
                        if event.finish_reason is not None:
                            del self.requests[request_id]
                        items.append((seq, event))
                    if items:
                        self.engine._dispatch(items)
                elif kind == "metrics":
                    self.engine.metrics = message[1]
                elif kind == "stopped":
                    break
        except (EOFError, OSError):
            self._child_gone()
        # Whatever is still open can never finish now.
        orphans = [(seq, _final(seq)) for seq in self.requests.values()]
        self.requests.clear()
        if orphans:
            self.engine._dispatch(orphans)

    def _child_gone(self) -> None:
        """The child closed the pipe unasked: a stop signal ended it (logged at INFO), or
        it failed (ERROR, with its exit status)."""
        self.process.join(5)  # it is exiting: its exit status says how
        code = self.process.exitcode
        if code in _STOP_SIGNALS:
            log.info("the engine process stopped (%s)", _STOP_SIGNALS[code])
        else:
            log.error("the engine process exited%s", "" if code is None else f" with status {code}")
        self.engine.load_error = "the engine process exited"
        self.engine._ready.clear()


def _final(seq: Sequence) -> TokenEvent:
    return TokenEvent(
        index=1,
        id=-1,
        text="",
        token_text="",
        logprob=None,
        special=True,
        finish_reason=FinishReason.ERROR,
        generated_text="",
        input_length=len(seq.prompt_ids),
        error="the engine process exited",
    )


class ProcessEngine(Engine):
    """An engine whose model and scheduler run in a child process."""

    def load_model(self) -> None:
        """Resolve the model here (downloads show progress in this process), load it there."""
        from transformers import AutoTokenizer

        from streamhost.engine.loader import ModelLoadError, Vocab, resolve_model_path

        config = self.config
        path = resolve_model_path(config.model, config.revision, config.trust_remote_code)
        # The child starts first: its imports and model load (seconds, most of a model
        # server's start) run while this process loads its own tokenizer.
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        child_config = replace(config, model=str(path))
        process = context.Process(
            target=engine_main, args=(child, child_config), name="streamhost-engine", daemon=True
        )
        process.start()
        child.close()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(
                path, trust_remote_code=config.trust_remote_code
            )
        except BaseException:
            process.kill()
            process.join(10)
            raise
        message = parent.recv()
        if message[0] == "failed":
            process.join(10)
            raise ModelLoadError(message[1])
        _, info = message
        self.model = _ModelInfo(**info)
        self.vocab = Vocab(self.tokenizer, info["eos_ids"], info["special_ids"])
        self.context_window = info["context_window"]
        self.token_count = info["token_count"]
        self.config.max_input_tokens = info["max_input_tokens"]
        self.config.max_total_tokens = info["max_total_tokens"]
        self.config.max_batch_prefill_tokens = info["max_batch_prefill_tokens"]
        self._scheduler = RemoteScheduler(self, parent, process)  # type: ignore[assignment]
        self._scheduler.start()
        self._ready.set()

    def _sampler(self, params: SamplingParams) -> Any:
        # Sampling state lives with the model, in the child.
        return None


class _ModelInfo:
    """What the parent knows of the model in the child (for /info)."""

    def __init__(self, **info: Any) -> None:
        self.model_id = info.get("model_id")
        self.dtype = info.get("dtype")
        self.device = info.get("device")
        self.sha = info.get("sha")
        self.context_window = info.get("context_window")
        self.eos_ids = info.get("eos_ids")
        self.special_ids = info.get("special_ids")


def _thread_locked_progress_bars() -> None:
    """Give tqdm (the weight-loading progress bars) a thread lock. Left to itself it makes a
    multiprocessing lock, a named semaphore that only an orderly exit removes: a process
    stopped by SIGTERM with its group leaves it for the resource tracker, which warns of a
    leaked semaphore. No other process writes this one's bars."""
    try:
        from tqdm import tqdm
    except ImportError:
        return
    tqdm.set_lock(threading.RLock())


def engine_main(conn: Any, config: EngineConfig) -> None:
    """The child process: load the model, run the scheduler, talk over ``conn``."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # A terminal's Ctrl-C is the parent's to handle: it stops this process over the pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _thread_locked_progress_bars()
    from streamhost.engine.detokenizer import IncrementalDetokenizer, StopMatcher
    from streamhost.engine.loader import load_model
    from streamhost.engine.runner import make_runner
    from streamhost.engine.sampling import RowSampler
    from streamhost.engine.scheduler import Scheduler

    try:
        loaded = load_model(config)
        if loaded.device.type == "cpu":
            import os

            import torch

            torch.set_num_threads(config.cpu_threads or max(1, (os.cpu_count() or 2) - 1))
        config.resolve_limits(loaded.context_window, loaded.device.type)
    except Exception as exc:  # reported to the parent, which reports it on /ping
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    send_lock = threading.Lock()
    metrics = EngineMetrics()
    last_sent = {"at": 0.0, "gauges": (0, 0)}

    def dispatch(events: list[tuple[Sequence, TokenEvent]]) -> None:
        payload = [(seq.request_id, event) for seq, event in events]
        now = time.monotonic()
        gauges = (metrics.batch_size, metrics.queue_size)
        with send_lock:
            conn.send(("events", payload))
            # Counters may lag by the interval; the gauges go up whenever they change, so
            # an idle engine never reports a batch it no longer has.
            if gauges != last_sent["gauges"] or now - last_sent["at"] > METRICS_INTERVAL:
                last_sent["at"], last_sent["gauges"] = now, gauges
                conn.send(("metrics", metrics))

    runner = make_runner(loaded.model, loaded.device, config.fast_path)
    scheduler = Scheduler(runner, loaded.vocab, config, metrics, dispatch)
    scheduler.start()
    conn.send(
        (
            "ready",
            {
                "model_id": loaded.model_id,
                "dtype": loaded.dtype,
                "device": str(loaded.device),
                "sha": loaded.sha,
                "context_window": loaded.context_window,
                "token_count": loaded.model.get_input_embeddings().num_embeddings,
                "max_input_tokens": config.max_input_tokens,
                "max_total_tokens": config.max_total_tokens,
                "max_batch_prefill_tokens": config.max_batch_prefill_tokens,
                "eos_ids": loaded.vocab.eos_ids,
                "special_ids": loaded.vocab.special_ids,
            },
        )
    )
    live: dict[int, Sequence] = {}
    try:
        while True:
            message = conn.recv()
            kind = message[0]
            if kind == "submit":
                _, request_id, prompt_ids, params, max_new = message
                seq = Sequence(
                    request_id=request_id,
                    prompt_ids=prompt_ids,
                    params=params,
                    max_new_tokens=max_new,
                    sampler=RowSampler(params),
                    detokenizer=IncrementalDetokenizer(loaded.vocab),
                    stops=StopMatcher(list(params.stop), params.include_stop_str_in_output),
                    deliver=lambda event: None,
                )
                live[request_id] = seq
                scheduler.submit(seq)
            elif kind == "cancel":
                seq = live.get(message[1])
                if seq is not None:
                    scheduler.cancel(seq)
            elif kind == "stop":
                break
            # Forget requests that have finished (their last event went up already).
            if len(live) > 1024:
                for key in [k for k, s in live.items() if s.finished]:
                    del live[key]
    except (EOFError, OSError):
        pass  # the parent went away: stop
    scheduler.stop()
    try:
        with send_lock:
            conn.send(("metrics", metrics))
            conn.send(("stopped",))
    except (OSError, ValueError):
        pass
