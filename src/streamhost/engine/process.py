"""Our engine's model in its own process, so forward passes never compete with HTTP for
the GIL.

:class:`ProcessHost` is the :class:`~streamhost.engine.core.Engine`'s host when the model
runs in a child process. The parent keeps the tokenizer (validation and token counts
happen before any 200 is sent) and a thin record of each request; the child owns the
model, the batch and the detokenizers. One pipe carries submissions and cancellations
down and, per decode step, one message with every event of that step up.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from streamhost.engine.config import EngineConfig
from streamhost.engine.core import Loaded, SchedulerHost
from streamhost.engine.metrics import EngineMetrics
from streamhost.engine.protocol import ModelInfo
from streamhost.engine.scheduler import Sequence
from streamhost.engine.types import FinishReason, TokenEvent
from streamhost.processes import interrupts_held

log = logging.getLogger("streamhost.engine")

METRICS_INTERVAL = 0.5  # seconds between metric snapshots sent up by the child
# How the child ends when it is stopped with the rest of its process group (the gateway,
# `up` and service managers signal the group): a requested stop, not a failure.
_STOP_SIGNALS = {-signal.SIGTERM: "SIGTERM", -signal.SIGHUP: "SIGHUP"}


class RemoteScheduler:
    """The parent's stand-in for the scheduler: forwards requests over the pipe."""

    def __init__(self, host: ProcessHost, conn: Any, process: multiprocessing.Process) -> None:
        self.host = host
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
                        self.host.dispatch(items)
                elif kind == "metrics":
                    self.host.metrics = message[1]
                elif kind == "stopped":
                    break
        except (EOFError, OSError):
            self._child_gone()
        # Whatever is still open can never finish now.
        orphans = [(seq, _final(seq)) for seq in self.requests.values()]
        self.requests.clear()
        if orphans:
            self.host.dispatch(orphans)

    def _child_gone(self) -> None:
        """The child closed the pipe unasked: a stop signal ended it (logged at INFO), or
        it failed (ERROR, with its exit status)."""
        self.process.join(5)  # it is exiting: its exit status says how
        code = self.process.exitcode
        if code in _STOP_SIGNALS:
            log.info("the engine process stopped (%s)", _STOP_SIGNALS[code])
        else:
            log.error("the engine process exited%s", "" if code is None else f" with status {code}")
        self.host.lost("the engine process exited")


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


class ProcessHost(SchedulerHost):
    """The model and its scheduler in a child process; the tokenizer stays here (its
    scheduler is the child's stand-in, `RemoteScheduler`)."""

    def __init__(self, config: EngineConfig, dispatch: Any, lost: Any) -> None:
        self.config = config
        self.metrics = EngineMetrics()
        self.dispatch = dispatch  # the engine's: events of one step, on the reader thread
        self.lost = lost  # the engine's: the child is gone, with the reason
        self._child: tuple[Any, multiprocessing.Process, Any, float] | None = None
        self._scheduler: RemoteScheduler | None = None

    def start(self) -> None:
        """Start the engine process now when the model is on this machine (built in, or a
        folder): its imports and model load, most of a model server's start, then overlap
        the server's own. A model still to download starts in :meth:`load`, on the
        loader thread, where the download's progress is reported."""
        from streamhost.engine.tiny import built_in_names

        model = self.config.model
        if self._child is None and (model in built_in_names() or Path(model).expanduser().is_dir()):
            try:
                self._start_child()
            except Exception:  # a folder that is no model: load says why, on /ping
                self._child = None

    def _start_child(self) -> None:
        from streamhost.engine.loader import resolve_model_path

        config = self.config
        path = resolve_model_path(config.model, config.revision, config.trust_remote_code)
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        child_config = replace(config, model=str(path))
        process = context.Process(
            target=engine_main, args=(child, child_config), name="streamhost-engine", daemon=True
        )
        spawned = time.time()
        with interrupts_held():  # Ctrl-C now would leave the child a cut start message
            process.start()
        child.close()
        self._child = (parent, process, path, spawned)

    def load(self) -> Loaded:
        """Resolve the model here (downloads show progress in this process), load it there."""
        from streamhost.engine.loader import ModelLoadError, Vocab
        from streamhost.engine.tokenizer import load_tokenizer

        config = self.config
        # The child starts first: its imports and model load (seconds, most of a model
        # server's start) run while this process loads its own tokenizer.
        if self._child is None:
            self._start_child()
        assert self._child is not None
        parent, process, path, spawned = self._child
        try:
            tokenizer = load_tokenizer(path, config.trust_remote_code)
            tokenizer_s = time.time() - spawned
        except BaseException:
            process.kill()
            process.join(10)
            raise
        message = parent.recv()
        if message[0] == "failed":
            process.join(10)
            raise ModelLoadError(message[1])
        _, info = message
        started, imported, loaded = info["times"]
        config.max_input_tokens = info["max_input_tokens"]
        config.max_total_tokens = info["max_total_tokens"]
        config.max_batch_prefill_tokens = info["max_batch_prefill_tokens"]
        config.max_batch_size = info["max_batch_size"]
        self._scheduler = RemoteScheduler(self, parent, process)
        self._scheduler.start()
        return Loaded(
            vocab=Vocab(tokenizer, info["eos_ids"], info["special_ids"]),
            info=ModelInfo(
                info["model_id"], info["dtype"], info["device"], info["sha"], info["context_window"]
            ),
            context_window=info["context_window"],
            tokenizer=tokenizer,
            token_count=info["token_count"],
            stages={
                "engine process start": started - spawned,
                "its imports": imported - started,
                "model load": loaded - imported,
                "tokenizer": tokenizer_s,  # here, meanwhile
            },
        )


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
    started = time.time()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # A terminal's Ctrl-C is the parent's to handle: it stops this process over the pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _thread_locked_progress_bars()
    from streamhost.engine.detokenizer import IncrementalDetokenizer, StopMatcher
    from streamhost.engine.loader import load_model, make_runner
    from streamhost.engine.sampling import RowSampler
    from streamhost.engine.scheduler import Scheduler

    imported = time.time()
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
                "token_count": loaded.token_count,
                "max_input_tokens": config.max_input_tokens,
                "max_total_tokens": config.max_total_tokens,
                "max_batch_prefill_tokens": config.max_batch_prefill_tokens,
                "max_batch_size": config.max_batch_size,
                "eos_ids": loaded.vocab.eos_ids,
                "special_ids": loaded.vocab.special_ids,
                "times": (started, imported, time.time()),
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
