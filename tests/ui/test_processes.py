"""streamhost.processes on real processes: TERM → wait → KILL, process groups, stop signals
and the parent-death signal."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable

import psutil
import pytest

from streamhost.processes import (
    Stop,
    interrupts_held,
    own_group,
    signal_group,
    stop_leftovers,
    stop_process,
    stop_process_async,
    stop_signals,
)
from tests.harness import still_running

# A child that says "ready" once its SIGTERM handling is set, then waits to be stopped.
OBEYS_SIGTERM = "import time; print('ready', flush=True); time.sleep(60)"
IGNORES_SIGTERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(60)"
)


def start(code: str) -> subprocess.Popen:
    """``python -c code`` once it has printed its ready line."""
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    return process


def group_with_a_grandchild(code: str) -> tuple[subprocess.Popen, psutil.Process]:
    """A group leader running ``code`` that first starts a grandchild running ``code`` too."""
    leader_code = textwrap.dedent(f"""
        import subprocess, sys
        child = subprocess.Popen([sys.executable, "-c", {code!r}], stdout=subprocess.PIPE)
        child.stdout.readline()
        print(child.pid, flush=True)
        exec({code!r})
    """)
    leader = subprocess.Popen(
        [sys.executable, "-c", leader_code],
        stdout=subprocess.PIPE,
        text=True,
        **own_group(),
    )
    assert leader.stdout is not None
    grandchild = psutil.Process(int(leader.stdout.readline()))
    assert leader.stdout.readline().strip() == "ready"
    return leader, grandchild


def alive(process: subprocess.Popen) -> Callable[[], bool]:
    return lambda: process.poll() is None


def test_a_process_that_obeys_sigterm_is_not_killed() -> None:
    process = start(OBEYS_SIGTERM)
    kills: list[bool] = []
    begun = time.monotonic()
    stop_process(alive(process), process.send_signal, 20, on_kill=lambda: kills.append(True))
    assert process.returncode == -signal.SIGTERM
    assert not kills
    assert time.monotonic() - begun < 10


def test_a_process_that_ignores_sigterm_is_killed_after_the_timeout() -> None:
    process = start(IGNORES_SIGTERM)
    kills: list[bool] = []
    begun = time.monotonic()
    stop_process(alive(process), process.send_signal, 1.0, on_kill=lambda: kills.append(True))
    took = time.monotonic() - begun
    assert process.returncode == -signal.SIGKILL
    assert kills == [True]
    assert 1.0 <= took < 10


def test_hurry_cuts_the_wait_for_sigterm_short() -> None:
    process = start(IGNORES_SIGTERM)
    begun = time.monotonic()
    stop_process(alive(process), process.send_signal, 60, hurry=lambda: True)
    assert process.returncode == -signal.SIGKILL
    assert time.monotonic() - begun < 10


def test_a_process_already_gone_gets_no_sigterm_only_the_kill_meant_for_its_group() -> None:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait(30)
    sent: list[int] = []
    stop_process(alive(process), sent.append, 20, on_kill=lambda: sent.append(-1))
    assert sent == [signal.SIGKILL]  # and no on_kill: it did not outlive a SIGTERM


def test_the_kill_reaches_whatever_is_left_of_a_group() -> None:
    leader, grandchild = group_with_a_grandchild(IGNORES_SIGTERM)
    try:
        stop_process(alive(leader), lambda signum: signal_group(leader.pid, signum), 0.5)
        assert leader.returncode == -signal.SIGKILL
        assert not still_running([grandchild], 10), "the grandchild outlived its group"
    finally:
        stop_leftovers([grandchild], 1)


def test_a_child_has_a_group_of_its_own_in_our_session() -> None:
    code = "import os; print(os.getpgid(0), os.getsid(0), os.umask(0))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
        **own_group(lambda: os.umask(0o027)),  # what it is given to run also runs
    ).stdout.split()
    pid_group, session, umask = (int(x) for x in out)
    assert pid_group != os.getpgid(0)  # Ctrl-C at the terminal does not reach it
    assert session == os.getsid(0)  # and it shares our share of the CPU (see `own_group`)
    assert umask == 0o027


def test_signalling_a_group_that_is_gone_is_no_error() -> None:
    process = subprocess.Popen([sys.executable, "-c", "pass"], **own_group())
    process.wait(30)
    signal_group(process.pid, signal.SIGTERM)


def test_the_async_stop_leaves_the_event_loop_running() -> None:
    process = start(IGNORES_SIGTERM)

    async def stop_and_count_ticks() -> int:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        await stop_process_async(alive(process), process.send_signal, 0.5)
        ticker.cancel()
        return ticks

    ticks = asyncio.run(stop_and_count_ticks())
    assert process.returncode == -signal.SIGKILL
    assert ticks >= 10, "the loop was blocked while the process was being stopped"


def test_leftovers_are_stopped_even_when_they_ignore_sigterm() -> None:
    leader, grandchild = group_with_a_grandchild(IGNORES_SIGTERM)
    leader.kill()
    leader.wait(30)
    assert grandchild.is_running()
    begun = time.monotonic()
    stop_leftovers([grandchild], 0.5)
    assert not still_running([grandchild], 0)
    assert time.monotonic() - begun < 10


def test_stop_signals_raise_stop_once_then_count() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with stop_signals() as received:
        with pytest.raises(Stop) as stopped:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        assert stopped.value.args == (signal.SIGTERM,)
        os.kill(os.getpid(), signal.SIGHUP)  # while stopping: counted, not raised
        time.sleep(0.1)
        assert received == [signal.SIGTERM, signal.SIGHUP]
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_child_set_to_exit_with_its_parent_gets_sigterm_when_the_parent_is_killed() -> None:
    parent_code = textwrap.dedent(f"""
        import subprocess, sys
        from streamhost.processes import exit_with_parent
        child = subprocess.Popen(
            [sys.executable, "-c", {OBEYS_SIGTERM!r}],
            stdout=subprocess.PIPE,
            preexec_fn=exit_with_parent(),
        )
        child.stdout.readline()
        print(child.pid, flush=True)
        import time; time.sleep(60)
    """)
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    child = psutil.Process(int(parent.stdout.readline()))
    try:
        parent.kill()
        parent.wait(30)
        assert not still_running([child], 10), "the child outlived its killed parent"
    finally:
        stop_leftovers([child], 1)


def test_ctrl_c_is_held_back_over_a_childs_start_and_raised_after() -> None:
    reached_the_end = False
    with pytest.raises(KeyboardInterrupt), interrupts_held():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # Python runs the handler between bytecodes: here, if at all
        reached_the_end = True
    assert reached_the_end
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
