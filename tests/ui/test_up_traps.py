"""``streamhost up`` where a new user trips: a second ``up`` on the same state refuses in
one line and leaves the first serving; ``up --model X`` on a ``default`` that serves starts
X beside it, switches only once X is healthy, and keeps the old model if X never is; the
blog's LMI request sent to ``default``, which speaks TGI, ends."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import pytest

from streamhost.client import LineIterator
from tests.harness import free_port, interrupt_popen, model_servers

from .conftest import streamhost_command, tiny_cache

pytestmark = pytest.mark.slow

READY_LINE = "Ctrl-C stops everything."


@dataclass
class Up:
    """A running ``streamhost up``: its process, stdout lines and stderr file."""

    process: subprocess.Popen
    stderr: Path
    lines: list[str] = field(default_factory=list)

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while READY_LINE not in self.lines:
            assert self.process.poll() is None, f"up exited: {self.stderr.read_text()}"
            assert time.monotonic() < deadline, f"up not ready: {self.stderr.read_text()}"
            time.sleep(0.1)

    def clients(self) -> tuple[object, object]:
        """boto3 sagemaker and sagemaker-runtime clients built from the printed exports."""
        line = next(line for line in self.lines if line.startswith("export "))
        variables = dict(re.findall(r"(\w+)=(\S+)", line))
        session = boto3.session.Session(
            aws_access_key_id=variables["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=variables["AWS_SECRET_ACCESS_KEY"],
            region_name=variables["AWS_DEFAULT_REGION"],
        )
        url = variables["AWS_ENDPOINT_URL_SAGEMAKER"]
        return session.client("sagemaker", endpoint_url=url), session.client(
            "sagemaker-runtime", endpoint_url=url
        )


def environment(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "STREAMHOST_"))}
    env.update(HOME=str(home), STREAMHOST_CACHE=tiny_cache())
    env.pop("XDG_STATE_HOME", None)
    return env


@contextmanager
def running_up(home: Path, *args: str, name: str = "up") -> Iterator[Up]:
    """``streamhost up --no-ui ARGS`` with HOME at ``home``; SIGINT on leaving (exit 0)."""
    stderr = home.parent / f"{name}.stderr"
    with stderr.open("wb") as errors:
        process = subprocess.Popen(
            [*streamhost_command("up"), "--no-ui", *args],
            env=environment(home),
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
    up = Up(process, stderr)
    threading.Thread(target=lambda: up.lines.extend(_lines(process)), daemon=True).start()
    try:
        yield up
    finally:
        status = interrupt_popen(process)
    assert status == 0, stderr.read_text()


def _lines(process: subprocess.Popen) -> Iterator[str]:
    assert process.stdout is not None
    for line in process.stdout:
        yield line.rstrip("\n")


def generated_tokens(smr: object) -> int:
    body = {"inputs": "hello", "parameters": {"max_new_tokens": 8, "details": True}}
    response = smr.invoke_endpoint(EndpointName="default", Body=json.dumps(body))  # type: ignore[attr-defined]
    return json.loads(response["Body"].read())[0]["details"]["generated_tokens"]


def test_a_second_up_on_the_same_state_refuses_in_one_line_naming_the_first(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    port = free_port()
    with running_up(home, "--port", str(port), "--model", "synthetic:5") as first:
        first.wait_ready()
        state = home / ".local" / "state" / "streamhost"
        servers = {p.pid for p in model_servers(state)}
        assert servers

        ports = ["--port", str(free_port()), "--ui-port", str(free_port())]
        second = subprocess.run(
            [*streamhost_command("up"), *ports, "--model", "synthetic:5"],
            env=environment(home),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1
        assert second.stdout == ""
        (line,) = second.stderr.strip().splitlines()
        assert line.startswith("streamhost up: the state in ")
        assert f"streamhost up (pid {first.process.pid}: " in line
        assert f"http://127.0.0.1:{port}" in line
        assert "--state" in line

        # The first one's model server is untouched and serves.
        assert {p.pid for p in model_servers(state)} == servers
        _, smr = first.clients()
        assert generated_tokens(smr) == 8


def test_up_with_a_model_that_cannot_load_keeps_default_serving_its_old_model(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    (not_a_model / "README.txt").write_text("no weights here\n")
    with running_up(home, "--port", str(free_port()), "--model", "synthetic:5") as first:
        first.wait_ready()

    with running_up(
        home, "--port", str(free_port()), "--model", str(not_a_model), name="second"
    ) as second:
        second.wait_ready()
        sm, smr = second.clients()
        assert generated_tokens(smr) == 8  # still the old model, after the failed switch
        errors = second.stderr.read_text()
        (line,) = [line for line in errors.splitlines() if "did not come up" in line]
        assert line.startswith(
            f"streamhost up: endpoint default keeps serving synthetic:5: {not_a_model} did "
            "not come up: "
        )
        assert "has no config.json" in line  # the cause, once
        assert line.endswith("; see: streamhost logs default")
        assert "Replacing endpoint" not in errors
        assert "(synthetic:5, TGI API)" in "\n".join(second.lines)
        # What was made for the failed model is gone; the serving one is kept.
        models = sm.list_models()["Models"]  # type: ignore[attr-defined]
        assert len(models) == 1
        described = sm.describe_endpoint(EndpointName="default")  # type: ignore[attr-defined]
        assert described["EndpointConfigName"] == models[0]["ModelName"]


def test_up_with_another_model_switches_default_once_the_new_one_is_healthy(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    with running_up(home, "--port", str(free_port()), "--model", "synthetic:5") as first:
        first.wait_ready()
        old_sm, _ = first.clients()
        (old,) = old_sm.list_models()["Models"]  # type: ignore[attr-defined]

    with running_up(
        home, "--port", str(free_port()), "--model", "synthetic:1", name="second"
    ) as second:
        second.wait_ready()
        sm, smr = second.clients()
        assert "Endpoint default is InService (switched)." in second.stderr.read_text()
        assert generated_tokens(smr) == 8
        (model,) = sm.list_models()["Models"]  # type: ignore[attr-defined]
        assert model["ModelName"] != old["ModelName"]  # the old one was deleted
        container = sm.describe_model(ModelName=model["ModelName"])["PrimaryContainer"]  # type: ignore[attr-defined]
        assert container["Environment"]["HF_MODEL_ID"] == "synthetic:1"


def test_the_blogs_lmi_request_to_default_ends_with_our_line_iterator(tmp_path: Path) -> None:
    # `default` (the built-in tiny-chat) speaks TGI, as the banner says: the blog's LMI
    # request, without "stream": true, gets TGI's one JSON answer with no newline after it.
    # The blog's own LineIterator waits for that newline forever; ours yields the answer as
    # the last line and stops.
    home = tmp_path / "home"
    home.mkdir()
    with running_up(home, "--port", str(free_port())) as up:
        up.wait_ready()
        assert "  endpoint     default  (tiny-chat, TGI API)" in up.lines
        _, smr = up.clients()
        body = {"inputs": "what is life", "parameters": {"max_new_tokens": 40}}
        resp = smr.invoke_endpoint_with_response_stream(  # type: ignore[attr-defined]
            EndpointName="default", Body=json.dumps(body), ContentType="application/json"
        )
        (line,) = list(LineIterator(resp["Body"]))
        (answer,) = json.loads(line)
        assert answer["generated_text"].strip()
