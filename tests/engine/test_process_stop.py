"""A model server stopped as services stop it — a signal to its whole process group, which
its engine process is part of — logs no error and leaves nothing for multiprocessing's
resource tracker to clean up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamhost.processes import own_group
from tests.harness import descendants, free_port, still_running, wait_until_serving

pytestmark = pytest.mark.slow  # a real model server loads the tiny model: ~10-30 s


def stopped_server_log(folder: Path, signum: int) -> str:
    """The log of ``serve-model --model tiny`` in its own process group, once serving, after
    ``signum`` to the group, once it and every process it started have gone."""
    port = free_port()
    log = folder / "serve-model.log"
    command = [sys.executable, "-m", "streamhost.cli", "serve-model", "--model", "tiny"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*command, "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            **own_group(),  # as the gateway starts instances
        )
    family = []
    try:
        wait_until_serving(f"http://127.0.0.1:{port}/ping", process, timeout=180)
        family = descendants(process.pid)
        assert any("multiprocessing" in " ".join(p.cmdline()) for p in family), family
        os.killpg(process.pid, signum)
        process.wait(60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)
    # The resource tracker reports leaks when the server has gone: wait for it too.
    assert not still_running(family, 20)
    return log.read_text(errors="replace")


def test_sigterm_to_the_group_is_a_clean_stop(tiny_dir: Path, tmp_path: Path) -> None:
    text = stopped_server_log(tmp_path, signal.SIGTERM)
    assert "INFO streamhost.engine: the engine process stopped (SIGTERM)" in text, text[-3000:]
    assert "ERROR" not in text and "Traceback" not in text, text[-3000:]
    assert "leaked semaphore" not in text, text[-3000:]


def test_ctrl_c_leaves_the_engine_process_to_its_parent(tiny_dir: Path, tmp_path: Path) -> None:
    # The engine process ignores SIGINT; the server stops it over its pipe, in order.
    text = stopped_server_log(tmp_path, signal.SIGINT)
    assert "Process streamhost-engine" not in text, text[-3000:]  # its traceback's header
    assert "streamhost.engine: the engine process" not in text, text[-3000:]
    assert "leaked semaphore" not in text, text[-3000:]


@pytest.mark.parametrize("after", [0.3, 1.5])
def test_ctrl_c_while_the_server_starts_ends_it_without_a_traceback_or_leftovers(
    tiny_dir: Path, after: float
) -> None:
    # Before uvicorn handles Ctrl-C (imports, the engine process starting, the model loading).
    # The console script, as a terminal's Ctrl-C reaches it: interrupted this early,
    # `python -m streamhost.cli` exits by the signal (-2) about one time in four after
    # printing the same line (seen at this commit and before it; not understood yet).
    command = [str(Path(sys.executable).parent / "streamhost"), "serve-model", "--model", "tiny"]
    # With Ctrl-C's default disposition, as in a terminal: a test run started in the
    # background of a non-interactive shell inherits SIGINT ignored, and Python then never
    # installs its KeyboardInterrupt handler (the signal is lost until uvicorn takes it).
    terminal = "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    terminal += "os.execv(sys.argv[1], sys.argv[1:])"
    process = subprocess.Popen(
        [sys.executable, "-c", terminal, *command, "--port", str(free_port())],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        **own_group(),
    )
    try:
        time.sleep(after)
        family = descendants(process.pid)
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)
    assert "Traceback" not in out, out[-3000:]
    assert process.returncode in (0, 130), out[-3000:]  # 0: uvicorn had taken over the signal
    assert not still_running(family, 20)
