"""Time to the first token of `make run`: the whole command, from its start to the first
streamed token of endpoint `default`, with its stages.

Each run starts the command in a fresh process group with its own HOME (so its own
credentials and state), waits for the first token, then stops it with Ctrl-C as a user
would. The first run deploys `default` on an empty state; the runs after it are restarts
on that state, which is what a user meets every day. With `--others N`, N more endpoints
are deployed into the state first, to show that `default` does not wait for them.

    python benchmarks/startup.py --runs 5            # from the repository root, installed
    python benchmarks/startup.py --runs 5 --others 2

The report (median and every run, per stage) goes to stdout and to
`benchmarks/results/startup.md`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import boto3
from botocore.config import Config

from streamhost.client import load_credentials
from streamhost.ports import free_port
from streamhost.processes import signal_group, stop_process

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PROMPT = {"inputs": "Hello", "parameters": {"max_new_tokens": 4}, "stream": True}


def _ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def _first_token(home: Path, gateway: str, deadline: float) -> float | None:
    """Seconds (time.monotonic) when the first payload part of `default` arrived."""
    client = None
    while time.monotonic() < deadline:
        if client is None:
            keys = load_credentials(home / ".config" / "streamhost" / "credentials")
            if keys is None:
                time.sleep(0.05)
                continue
            client = boto3.client(
                "sagemaker-runtime",
                endpoint_url=gateway,
                region_name="us-east-1",
                aws_access_key_id=keys["aws_access_key_id"],
                aws_secret_access_key=keys["aws_secret_access_key"],
                config=Config(retries={"total_max_attempts": 1}, connect_timeout=1),
            )
        try:
            response = client.invoke_endpoint_with_response_stream(
                EndpointName="default",
                Body=json.dumps(PROMPT),
                ContentType="application/json",
            )
            for event in response["Body"]:
                if "PayloadPart" in event:
                    return time.monotonic()
        except Exception:  # not up yet: no gateway, no endpoint, endpoint not InService
            time.sleep(0.05)
    return None


def _watch(url: str, deadline: float, found: dict, key: str, t0: float) -> None:
    while time.monotonic() < deadline and key not in found:
        if _ok(url):
            found[key] = time.monotonic() - t0
            return
        time.sleep(0.05)


def _model_stages(home: Path) -> dict[str, float]:
    """`default`'s model server's own stages, from the latest 'model ready' line of its logs."""
    lines = sorted(
        line
        for log in home.glob(".local/state/streamhost/logs/default/*.log")
        for line in log.read_text(errors="replace").splitlines()
        if "model ready in" in line
    )  # each line starts with its time
    if not lines:
        return {}
    last = lines[-1]
    stages = {"model server: model ready": float(re.search(r"model ready in ([\d.]+) s", last)[1])}
    for name, value in re.findall(r"([a-z][a-z ]+?) ([\d.]+) s", last.split("(", 1)[-1]):
        stages[f"model server: {name.strip()}"] = float(value)
    return stages


def run_once(command: list[str], home: Path, timeout: float) -> dict[str, float]:
    port, ui_port = free_port(), free_port()
    env = {**os.environ, "HOME": str(home), "PORT": str(port), "UI_PORT": str(ui_port)}
    for name in ("XDG_STATE_HOME", "XDG_CONFIG_HOME", "STREAMHOST_STATE"):
        env.pop(name, None)
    gateway, ui = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{ui_port}"
    log = open(home / "command.log", "ab")  # noqa: SIM115 - closed in the finally below
    t0 = time.monotonic()
    process = subprocess.Popen(
        [*command, f"PORT={port}", f"UI_PORT={ui_port}"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = t0 + timeout
    found: dict[str, float] = {}
    watchers = [
        threading.Thread(target=_watch, args=(f"{gateway}/ping", deadline, found, "gateway", t0)),
        threading.Thread(target=_watch, args=(f"{ui}/_stcore/health", deadline, found, "UI", t0)),
    ]
    for watcher in watchers:
        watcher.start()
    try:
        first = _first_token(home, gateway, deadline)
        if first is None:
            raise SystemExit(f"no first token within {timeout:.0f} s; see {home / 'command.log'}")
        found["first token"] = first - t0
        for watcher in watchers:
            watcher.join(timeout=max(0.0, deadline - time.monotonic()))
    finally:
        _interrupt(process)
        log.close()
    return {**found, **_model_stages(home)}


def _interrupt(process: subprocess.Popen, timeout: float = 120) -> None:
    """Ctrl-C to the command's process group, as a user stops it; SIGKILL past `timeout`."""
    stop_process(
        lambda: process.poll() is None,
        lambda signum: signal_group(process.pid, signum),
        timeout,
        first=signal.SIGINT,
    )
    process.wait()


def deploy_others(home: Path, count: int) -> None:
    """Deploy `count` more endpoints into the state, through a gateway `up` starts."""
    if not count:
        return
    port = free_port()
    env = {**os.environ, "HOME": str(home)}
    process = subprocess.Popen(
        [str(ROOT / ".venv/bin/streamhost"), "up", "--no-ui", "--port", str(port)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        while not _ok(f"http://127.0.0.1:{port}/ping"):
            time.sleep(0.1)
        for index in range(count):
            subprocess.run(
                [
                    str(ROOT / ".venv/bin/streamhost"),
                    "deploy",
                    f"other-{index}",
                    "--model",
                    "tiny",
                    "--gateway",
                    f"http://127.0.0.1:{port}",
                ],
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
    finally:
        _interrupt(process)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="restarts to time (default 5)")
    parser.add_argument("--others", type=int, default=0, help="extra endpoints in the state")
    parser.add_argument("--command", default="make run", help="command to time (default: make run)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per run")
    args = parser.parse_args()
    command = args.command.split()
    with tempfile.TemporaryDirectory(prefix="streamhost-startup-") as folder:
        home = Path(folder)
        first = run_once(command, home, args.timeout)
        deploy_others(home, args.others)
        restarts = [run_once(command, home, args.timeout) for _ in range(args.runs)]
    stages = list(dict.fromkeys(k for run in [first, *restarts] for k in run))
    lines = [
        f"# Time to the first token of `{args.command}`",
        "",
        f"{args.runs} restarts on a state holding `default`"
        + (f" and {args.others} other endpoint(s)" if args.others else "")
        + "; seconds from the command's start (model server stages: their own durations).",
        "",
        "| stage | first run (empty state) | restarts: median | restarts: each |",
        "|---|---|---|---|",
    ]
    for stage in stages:
        values = [run[stage] for run in restarts if stage in run]
        median = f"{statistics.median(values):.2f}" if values else "-"
        each = " ".join(f"{v:.2f}" for v in values)
        first_value = f"{first[stage]:.2f}" if stage in first else "-"
        lines.append(f"| {stage} | {first_value} | {median} | {each} |")
    report = "\n".join(lines) + "\n"
    print(report)
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "startup.md" if not args.others else f"startup-others-{args.others}.md"
    (RESULTS / name).write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
