"""Child processes: how streamhost stops what it started, and is stopped itself.

- `stop_signals` turns SIGINT, SIGTERM and SIGHUP into `Stop`, so that a command stops its
  children whichever of them arrives.
- `interrupts_held` holds Ctrl-C back while a child is handed its start (on the main
  thread), and raises it after.
- `exit_with_parent` has the kernel stop a child when its parent dies, even by SIGKILL.
- `own_group` gives a child a process group of its own in the parent's session, and
  `signal_group` signals such a group: the child and everything it started.
- `stop_process` is the TERM → wait → KILL sequence. It is written once, as the steps of
  `stop_steps`, and driven by a blocking caller (`stop_process`) or an asyncio one
  (`stop_process_async`); `stop_leftovers` runs it on processes found earlier by pid.

Depends on nothing else of ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import psutil

__all__ = [
    "KILL_WAIT_SECONDS",
    "Stop",
    "exit_with_parent",
    "interrupts_held",
    "own_group",
    "signal_group",
    "stop_leftovers",
    "stop_process",
    "stop_process_async",
    "stop_signals",
    "stop_steps",
]

POLL_SECONDS = 0.05
KILL_WAIT_SECONDS = 10.0  # for a SIGKILL to take: only a process stuck in the kernel is slower


class Stop(Exception):
    """SIGINT, SIGTERM or SIGHUP arrived: shut down."""


@contextlib.contextmanager
def stop_signals() -> Iterator[list[int]]:
    """Turn SIGINT, SIGTERM and SIGHUP into `Stop`; once stopping, further ones are counted in
    the yielded list (a second Ctrl-C hurries the shutdown) instead of interrupting it. Set
    whatever the signals' inherited handling (a shell starts background jobs with SIGINT
    ignored), so that each of them stops what the command started."""
    received: list[int] = []

    def handler(signum: int, _frame: Any) -> None:
        received.append(signum)
        if len(received) == 1:
            raise Stop(signum)

    stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # SIGHUP: the terminal closed
    previous = {s: signal.signal(s, handler) for s in stops}
    try:
        yield received
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Hold SIGINT back over the block and deliver it after, to the handler it had: for
    ``multiprocessing``'s start of a spawned child, which writes the child's start data to
    a pipe; interrupted half-way, the child reads a cut pickle and prints a traceback. Off
    the main thread (where Python runs signal handlers) it holds nothing back."""
    previous = signal.getsignal(signal.SIGINT)  # None: set outside Python, left alone
    if previous is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[Any] = []
    signal.signal(signal.SIGINT, lambda signum, frame: held.append(frame))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if held and callable(previous):
        previous(signal.SIGINT, held[0])
    elif held and previous == signal.SIG_DFL:
        os.kill(os.getpid(), signal.SIGINT)


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def exit_with_parent(signum: int = signal.SIGTERM) -> Callable[[], None] | None:
    """For a child's ``preexec_fn``: the kernel sends the child ``signum`` when this
    process dies, even by SIGKILL, so that a killed ``up`` or ``ui`` leaves no gateway or UI
    behind (each stops what it started on SIGTERM), and a model server on a Ray node dies
    with its actor (SIGKILL: as if its machine were lost). Linux only; elsewhere None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here, not after fork
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def set_death_signal() -> None:
        # Runs between fork and exec, maybe while another thread lives (up's spinner): it
        # only makes system calls (no lock another thread could hold at the fork).
        prctl(_PR_SET_PDEATHSIG, int(signum))
        if os.getppid() != parent:  # the parent died before the request took effect
            os._exit(1)

    return set_death_signal


def own_group(preexec_fn: Callable[[], None] | None = None) -> dict[str, Any]:
    """``Popen`` keyword arguments that start a child in a process group of its own, in this
    process's session, running ``preexec_fn`` as well.

    Its own group, so that `signal_group` reaches all it starts and a Ctrl-C at the terminal
    (sent to the foreground group) leaves it to the parent to stop. Not a session of its own:
    Linux's autogroup scheduling (on by default on desktops and plain servers) shares the CPU
    between sessions before processes, and a child that keeps a core busy in its own session
    then starves this one's processes that mostly wait. Measured on two cores with vLLM's
    CPU engine (whose engine core busy-polls for its worker): a stream's client, or a timer
    in any process of another session, waited up to 3 s for a core, and streams arrived as
    one block; with the server in the client's session the longest wait was 5 ms.
    """
    if sys.version_info >= (3, 11):
        return {"process_group": 0, "preexec_fn": preexec_fn}

    def set_group() -> None:  # what ``process_group=0`` does, before Python 3.11
        os.setpgid(0, 0)
        if preexec_fn is not None:
            preexec_fn()

    return {"preexec_fn": set_group}


def signal_group(pgid: int, signum: int) -> None:
    """Send ``signum`` to process group ``pgid``; nothing if no process is left in it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _never() -> bool:
    return False


def stop_steps(
    alive: Callable[[], bool],
    send: Callable[[int], None],
    timeout: float,
    *,
    hurry: Callable[[], bool] = _never,
    on_kill: Callable[[], None] | None = None,
    first: int = signal.SIGTERM,
) -> Iterator[float]:
    """TERM → wait → KILL as steps; each yielded number is a pause for the caller to sleep.

    SIGTERM (or ``first``: SIGINT stops a command as Ctrl-C does) if ``alive()``, then wait up to ``timeout`` seconds (less once ``hurry()``);
    ``on_kill()`` if it is still alive; SIGKILL in any case, since ``send`` may reach more
    than the one process ``alive`` watches (a group, whatever its leader started); then wait
    up to `KILL_WAIT_SECONDS` for the kill to take.
    """
    if alive():
        send(first)
        deadline = time.monotonic() + timeout
        while alive() and time.monotonic() < deadline and not hurry():
            yield POLL_SECONDS
        if on_kill is not None and alive():
            on_kill()
    send(signal.SIGKILL)
    deadline = time.monotonic() + KILL_WAIT_SECONDS
    while alive() and time.monotonic() < deadline:
        yield POLL_SECONDS


def stop_process(
    alive: Callable[[], bool],
    send: Callable[[int], None],
    timeout: float,
    *,
    hurry: Callable[[], bool] = _never,
    on_kill: Callable[[], None] | None = None,
    first: int = signal.SIGTERM,
) -> None:
    """TERM → wait → KILL (`stop_steps`), blocking until done."""
    for pause in stop_steps(alive, send, timeout, hurry=hurry, on_kill=on_kill, first=first):
        time.sleep(pause)


async def stop_process_async(
    alive: Callable[[], bool],
    send: Callable[[int], None],
    timeout: float,
    *,
    on_kill: Callable[[], None] | None = None,
) -> None:
    """TERM → wait → KILL (`stop_steps`) for a caller on an event loop, which keeps running."""
    for pause in stop_steps(alive, send, timeout, on_kill=on_kill):
        await asyncio.sleep(pause)


def stop_leftovers(processes: Iterable[psutil.Process], timeout: float) -> None:
    """TERM → wait → KILL for those of ``processes`` still running: processes found earlier
    (a child's descendants) that may have outlived it. psutil checks that a pid still names
    the same process before it signals it."""
    left = [process for process in processes if _running(process)]

    def send(signum: int) -> None:
        for process in left:
            if _running(process):
                with contextlib.suppress(psutil.Error):
                    process.send_signal(signum)

    stop_process(lambda: any(_running(process) for process in left), send, timeout)


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
