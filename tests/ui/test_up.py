"""``streamhost up`` from a clean HOME: it serves, and SIGINT leaves no process behind."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import threading
import time
from pathlib import Path

import boto3
import pytest

from streamhost.client import stream_text
from tests.harness import descendants, free_port, http_ok, interrupt_popen, still_running

from .conftest import streamhost_command, tiny_cache

# `streamhost up` as a user runs it: gateway, model server and UI processes.
pytestmark = pytest.mark.slow

READY_LINE = "Ctrl-C stops everything."


def read_lines(stream, lines: list[str]) -> None:
    for line in stream:
        lines.append(line.rstrip("\n"))


def wait_for_line(lines: list[str], text: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in lines:
        assert process.poll() is None, f"up exited with {process.returncode}: {lines}"
        assert time.monotonic() < deadline, f"no {text!r} within {timeout} s: {lines}"
        time.sleep(0.1)


def exported(lines: list[str]) -> dict[str, str]:
    line = next(line for line in lines if line.startswith("export "))
    return dict(re.findall(r"(\w+)=(\S+)", line))


def test_up_serves_a_streamed_invocation_and_sigint_stops_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    port, ui_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "STREAMHOST_"))}
    env.update(HOME=str(home), STREAMHOST_CACHE=tiny_cache())
    stderr = (tmp_path / "up.stderr").open("wb")
    process = subprocess.Popen(
        [*streamhost_command("up"), "--port", str(port), "--ui-port", str(ui_port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=read_lines, args=(process.stdout, lines), daemon=True)
    reader.start()
    family = []
    try:
        wait_for_line(lines, READY_LINE, process, timeout=240)
        variables = exported(lines)
        assert variables["AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"] == f"http://127.0.0.1:{port}"
        assert variables["AWS_ACCESS_KEY_ID"].startswith("SH")
        credentials = home / ".config" / "streamhost" / "credentials"
        assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
        assert variables["AWS_SECRET_ACCESS_KEY"] in credentials.read_text()
        assert http_ok(f"http://127.0.0.1:{ui_port}/_stcore/health")

        # The printed variables are all a boto3 user needs.
        for name in list(os.environ):
            if name.startswith("AWS_"):
                monkeypatch.delenv(name)
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        smr = boto3.client("sagemaker-runtime")
        body = {"inputs": "what is life?", "parameters": {"max_new_tokens": 16}, "stream": True}
        response = smr.invoke_endpoint_with_response_stream(
            EndpointName="default", Body=json.dumps(body)
        )
        text = stream_text(response)
        assert "".join(text)
        assert text.result.generated_tokens == 16
        # and CloudWatch's client reads the endpoint's metrics (boto3 1.42.7+ sends JSON 1.0).
        listed = boto3.client("cloudwatch").list_metrics(
            Namespace="AWS/SageMaker", MetricName="Invocations"
        )["Metrics"]
        assert {"Name": "EndpointName", "Value": "default"} in listed[0]["Dimensions"]

        family = descendants(process.pid)
        commands = [" ".join(p.cmdline()) for p in family]
        assert any("serve-model" in c for c in commands), commands
        assert any("streamlit" in c for c in commands), commands
    finally:
        try:
            status = interrupt_popen(process)
        finally:
            stderr.close()
    assert status == 0, (tmp_path / "up.stderr").read_text()
    left = still_running(family, 10)
    assert not left, [p.pid for p in left]
    assert "Stopped." in (tmp_path / "up.stderr").read_text()


def test_up_killed_outright_leaves_no_process_behind(tmp_path: Path) -> None:
    # SIGKILL gives up no chance to stop its children: the kernel tells them instead.
    home = tmp_path / "home"
    home.mkdir()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "STREAMHOST_"))}
    env.update(HOME=str(home), STREAMHOST_CACHE=tiny_cache())
    process = subprocess.Popen(
        [*streamhost_command("up"), "--port", str(port), "--no-ui"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines: list[str] = []
    threading.Thread(target=read_lines, args=(process.stdout, lines), daemon=True).start()
    family = []
    try:
        wait_for_line(lines, READY_LINE, process, timeout=240)
        family = descendants(process.pid)
        assert any("serve-model" in " ".join(p.cmdline()) for p in family)
    finally:
        process.kill()
        process.wait(30)
    left = still_running(family, 60)
    assert not left, [" ".join(p.cmdline()) for p in left]
