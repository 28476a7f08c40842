"""What the terminal commands print for a person: failures as one short line (the cause once,
then where to look), progress as plain lines when piped, endpoint names never cut, JSON for
programs, greedy decoding at temperature 0, chat commands answered in the terminal."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamhost.chat import run_chat
from streamhost.deploy import delete_endpoint
from streamhost.endpoints.clients import control_client, invocation_client
from streamhost.endpoints.invocation import GenerationParameters
from tests.harness import GatewayProcess, free_port, payload_bytes, tgi_body

from .conftest import KEYS, REPO, streamhost_command

# Longer than the table's column for it would be, and than the issue's `lmi-falcon…`.
BROKEN = "lmi-falcon-7b-instruct-broken"
SEE_LOGS = f"; see: streamhost logs {BROKEN}"


def run_command(gateway: GatewayProcess, *args: str, columns: int = 80) -> tuple[int, str, str]:
    """``streamhost ARGS`` in a subprocess, its output piped (not a terminal)."""
    name, *rest = args
    done = subprocess.run(
        [*streamhost_command(name), *rest, "--gateway", gateway.url],
        env={**gateway.env, "COLUMNS": str(columns)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    return done.returncode, done.stdout, done.stderr


@pytest.fixture(scope="module")
def broken_deploy(
    ui_gateway: GatewayProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[int, str]]:
    """``streamhost deploy`` of a model folder that does not exist, piped: its exit status
    and what it wrote to stderr. The endpoint stays, Failed, for the module's tests."""
    missing = tmp_path_factory.mktemp("models") / "no-such-model"
    status, _, err = run_command(
        ui_gateway, "deploy", BROKEN, "--model", str(missing), "--instance-type", "ml.m5.large"
    )
    try:
        yield status, err
    finally:
        delete_endpoint(control_client(ui_gateway.url, KEYS), BROKEN)


def test_a_failed_deploy_ends_with_one_short_line_the_cause_once_then_the_logs(
    broken_deploy: tuple[int, str],
) -> None:
    status, err = broken_deploy
    assert status == 1
    last = err.splitlines()[-1]
    assert last.startswith(f"streamhost deploy: endpoint {BROKEN} is Failed: an instance ")
    assert last.endswith(f"does not exist{SEE_LOGS}")
    assert last.count("no-such-model") == 1 and "Last log lines" not in last
    assert len(last) < 300


def test_a_piped_deploy_prints_progress_lines_and_no_blank_line(
    broken_deploy: tuple[int, str],
) -> None:
    _, err = broken_deploy
    lines = err.splitlines()
    assert all(line.strip() for line in lines), lines
    assert lines[0].startswith(f"Creating endpoint {BROKEN} · ")
    assert lines[0].endswith(" s)")  # seconds since the deploy began


def test_invoking_a_failed_endpoint_is_the_same_short_line(
    ui_gateway: GatewayProcess, broken_deploy: tuple[int, str]
) -> None:
    status, out, err = run_command(ui_gateway, "invoke", BROKEN, "hi")
    assert (status, out) == (1, "")
    assert err.count("\n") == 1
    assert err.startswith(f"streamhost invoke: endpoint {BROKEN} is Failed: an instance ")
    assert err.endswith(f"{SEE_LOGS}\n")


def test_describe_keeps_the_whole_failure_with_a_log_line_each(
    ui_gateway: GatewayProcess, broken_deploy: tuple[int, str]
) -> None:
    status, out, _ = run_command(ui_gateway, "endpoints", "describe", BROKEN)
    assert status == 0
    lines = out.splitlines()
    reason = next(line for line in lines if line.startswith("failure reason:"))
    assert "could not load its model" in reason and " | " not in reason
    logged = lines.index(next(line for line in lines if line.startswith("last log lines:")))
    assert any("model failed to load" in line for line in lines[logged:])
    assert all(" | " not in line for line in lines)


def test_the_endpoint_list_never_cuts_a_name_at_80_columns(
    ui_gateway: GatewayProcess, broken_deploy: tuple[int, str], slow_endpoint: str
) -> None:
    status, out, _ = run_command(ui_gateway, "endpoints", columns=80)
    assert status == 0
    rows = out.splitlines()
    assert any(row.startswith(f"{BROKEN} Failed ") for row in rows), out
    assert any(row.startswith(f"{slow_endpoint} ") for row in rows), out
    assert "…" not in out
    assert max(len(row.rstrip()) for row in rows) <= 80, out


def test_the_endpoint_list_as_json_holds_every_field(
    ui_gateway: GatewayProcess, broken_deploy: tuple[int, str]
) -> None:
    status, out, _ = run_command(ui_gateway, "endpoints", "--output", "json")
    assert status == 0
    records = {record["name"]: record for record in json.loads(out)}
    broken = records[BROKEN]
    assert broken["status"] == "Failed" and broken["api"] == "tgi"
    assert "Last log lines:" in broken["failure_reason"]  # the whole reason, as described
    assert broken["model_id"].endswith("no-such-model")
    assert broken["created"] and broken["model_names"]
    status, out, _ = run_command(ui_gateway, "endpoints", "describe", BROKEN, "--output", "json")
    assert json.loads(out) == broken


def test_watch_prints_each_variants_live_figures(
    ui_gateway: GatewayProcess, slow_endpoint: str
) -> None:
    # Three streamed invocations, then two refreshes of the watch, piped: a table each.
    runtime = invocation_client(ui_gateway.url, KEYS)
    for _ in range(3):
        response = runtime.invoke_endpoint_with_response_stream(
            EndpointName=slow_endpoint, Body=tgi_body("hi", 4), ContentType="application/json"
        )
        assert b"generated_text" in payload_bytes(response)
    status, out, err = run_command(
        ui_gateway,
        "endpoints",
        "--watch",
        slow_endpoint,
        "--count",
        "2",
        "--interval",
        "0.5",
        columns=160,
    )
    assert status == 0, err
    assert out.count("last 60 s") == 2 and out.count("ENDPOINT") == 2
    row = next(line for line in out.splitlines() if line.startswith(slow_endpoint))
    fields = row.split()
    # endpoint, variant, status, instances, invocations in the last minute (other tests
    # use the endpoint too), in flight, TTFB
    assert fields[1:4] == ["AllTraffic", "InService", "1/1"] and int(fields[4]) >= 3, row
    assert fields[6] != "-" and fields[7] == "ms", row  # a time to first byte was measured


def test_a_piped_deploy_that_succeeds_logs_its_progress_then_the_result(
    ui_gateway: GatewayProcess,
) -> None:
    name = "piped-progress"
    status, _, err = run_command(
        ui_gateway, "deploy", name, "--model", "synthetic:1", "--instance-type", "ml.m5.large"
    )
    try:
        assert status == 0, err
        lines = err.splitlines()
        assert all(line.strip() for line in lines), lines
        assert lines[0].startswith(f"Creating endpoint {name} · synthetic:1 (TGI)")
        assert lines[-1] == f"endpoint {name} is InService (TGI API)"
    finally:
        delete_endpoint(control_client(ui_gateway.url, KEYS), name)


def test_temperature_0_is_greedy(ui_gateway: GatewayProcess, chat_endpoint: str) -> None:
    # TGI's /generate refuses temperature 0; the CLI asks for greedy decoding instead.
    answers = set()
    for _ in range(2):
        status, out, err = run_command(
            ui_gateway,
            "invoke",
            chat_endpoint,
            "hello",
            "--temperature",
            "0",
            "--max-new-tokens",
            "9",
        )
        assert status == 0, err
        answers.add(out)
    assert len(answers) == 1 and answers.pop().strip()


def test_a_negative_temperature_is_refused_in_one_line(
    ui_gateway: GatewayProcess, chat_endpoint: str
) -> None:
    status, _, err = run_command(ui_gateway, "invoke", chat_endpoint, "hi", "--temperature", "-1")
    assert status == 1
    assert err == "streamhost invoke: --temperature must be 0 (greedy) or above, got -1.0\n"


def test_chat_answers_slash_commands_itself(
    gateway_home: GatewayProcess, slow_endpoint: str
) -> None:
    lines = iter(["/help", "/nope", "/exit"])
    out, err = io.StringIO(), io.StringIO()
    status = run_chat(
        gateway_home.url,
        slow_endpoint,
        parameters=GenerationParameters(max_new_tokens=3),
        read=lambda _prompt: next(lines),
        out=out,
        err=err,
    )
    assert status == 0
    assert "bot>" not in out.getvalue()  # nothing went to the model
    text = err.getvalue()
    assert "/help" in text and "/new" in text and "/exit" in text
    assert "unknown command /nope: /help lists the commands" in text
    assert "TTFT" not in text


def test_chat_sends_a_message_that_only_starts_with_a_slash(
    gateway_home: GatewayProcess, slow_endpoint: str
) -> None:
    lines = iter(["/usr/bin is a folder?", "/exit"])
    out = io.StringIO()
    run_chat(
        gateway_home.url,
        slow_endpoint,
        parameters=GenerationParameters(max_new_tokens=3),
        read=lambda _prompt: next(lines),
        out=out,
        err=io.StringIO(),
    )
    assert out.getvalue().count("bot> 0 1 2 \n") == 1


@pytest.mark.parametrize(("option", "variable"), [("--port", "PORT"), ("--ui-port", "UI_PORT")])
def test_a_port_in_use_names_the_option_and_the_make_variable(
    tmp_path: Path, option: str, variable: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "STREAMHOST_"))}
    env["HOME"] = str(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        ports = {"--port": str(free_port()), "--ui-port": str(free_port()), option: str(busy)}
        done = subprocess.run(
            [*streamhost_command("up"), *(x for pair in ports.items() for x in pair)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 1
    assert f"cannot use port {busy}" in done.stderr
    assert f"choose another with {option}, or {variable}=… with make run" in done.stderr


def test_a_gateway_that_exits_at_start_is_one_line_naming_its_log(tmp_path: Path) -> None:
    # A state `up` accepts and the gateway cannot open: nothing listens on port 1.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "STREAMHOST_"))}
    env.update(HOME=str(tmp_path), XDG_STATE_HOME=str(tmp_path / "state"))
    state = "postgresql://127.0.0.1:1/streamhost"
    done = subprocess.run(
        [*streamhost_command("up"), "--no-ui", "--port", str(free_port()), "--state", state],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line != "Stopped."]
    assert len(lines) == 1, done.stderr
    log = tmp_path / "state" / "streamhost" / "up-gateway.log"
    assert lines[0].startswith("streamhost up: the gateway exited with status 1: ")
    assert lines[0].endswith(f"; see: {log}") and log.exists()


def test_make_run_passes_both_ports() -> None:
    done = subprocess.run(
        ["make", "-n", "run", "PORT=9001", "UI_PORT=9002"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "streamhost up --port 9001 --ui-port 9002" in done.stdout


def test_chat_over_one_bidirectional_stream(
    gateway_home: GatewayProcess, slow_endpoint: str
) -> None:
    lines = iter(["first", "second", "/new", "third", "/exit"])
    out, err = io.StringIO(), io.StringIO()
    status = run_chat(
        gateway_home.url,
        slow_endpoint,
        parameters=GenerationParameters(max_new_tokens=3),
        bidi=True,
        read=lambda _prompt: next(lines),
        out=out,
        err=err,
    )
    assert status == 0
    assert out.getvalue().count("bot> 0 1 2 \n") == 3
    assert err.getvalue().count("TTFT") == 3 and "3 tokens" in err.getvalue()
    assert "(new conversation)" in err.getvalue()
