"""``streamhost up``: the whole product in one command.

It makes a key pair on first run (``~/.config/streamhost/credentials``), starts the gateway
and the chat UI at once, deploys endpoint ``default`` on the chosen model unless it is
already there (the gateway brings ``default`` back first, the other endpoints of the state
after it), and prints how to reach all of it from boto3. One ``up`` per state: a second one
refuses, naming the first (the gateway's state lock records it). A ``default`` that
serves another model is switched blue/green: the new model starts beside it and takes
over once healthy; if it never is, ``default`` keeps serving the old one. Ctrl-C or SIGTERM stops everything
it started: the UI, then the gateway, whose shutdown stops the model instances. Each child
runs in its own process group, so the terminal's Ctrl-C reaches only this process and the
shutdown happens in that order; whatever a child leaves behind is killed by process id.
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import os
import secrets
import socket
import string
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
from rich.console import Console

# Only what starting the gateway and the UI needs is imported here; boto3's side (deploying
# `default`, describing failures) is imported once they are started, so that they start
# ~0.4 s sooner.
from streamhost.client import credentials_file, load_credentials
from streamhost.command import CommandError
from streamhost.endpoints.clients import DEFAULT_ENDPOINT, ENDPOINT_ENV, GATEWAY_URL_ENV, REGION
from streamhost.processes import (
    Stop,
    exit_with_parent,
    own_group,
    signal_group,
    stop_leftovers,
    stop_process,
    stop_signals,
)
from streamhost.ui.launch import streamlit_command

if TYPE_CHECKING:
    from streamhost.deploy import DeploySpec

__all__ = ["add_up_command", "ensure_credentials", "main", "run_up"]

HOST = "127.0.0.1"
_KEY_ALPHABET = string.ascii_uppercase + string.digits
_GATEWAY_START_TIMEOUT = 60.0
_UI_START_TIMEOUT = 60.0
# The gateway stops its instances on the way out (drain, then SIGTERM, then SIGKILL).
_GATEWAY_STOP_TIMEOUT = 75.0
_UI_STOP_TIMEOUT = 10.0
_LEFTOVER_STOP_TIMEOUT = 5.0
_START_BANNER = "--- streamhost up:"  # starts each run's part of a child's log


def ensure_credentials(path: Path | None = None) -> dict[str, str]:
    """The ``[default]`` key pair in ``path`` (``~/.config/streamhost/credentials``),
    created with fresh random keys, mode 600, if the file does not exist."""
    path = path or credentials_file()
    if path.exists():
        found = load_credentials(path)
        if found is None:
            raise CommandError(
                f"{path} has no [default] aws_access_key_id / aws_secret_access_key: "
                "fix it, or remove it to have a new key pair made"
            )
        return found
    keys = {
        "aws_access_key_id": "SH" + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(18)),
        "aws_secret_access_key": secrets.token_urlsafe(30),
    }
    parser = configparser.ConfigParser(interpolation=None)
    parser["default"] = keys
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        parser.write(handle)
    os.chmod(path, 0o600)
    return keys


def _check_port_free(port: int, what: str) -> None:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError as error:
            option, variable = ("--ui-port", "UI_PORT") if what == "chat UI" else ("--port", "PORT")
            raise CommandError(
                f"cannot use port {port} for the {what} on {HOST}: {error.strerror or error}; "
                f"choose another with {option}, or {variable}=… with make run"
            ) from None


def _state_of(state: str | None) -> tuple[str, Path]:
    """(database URL, folder) of ``--state``, as the gateway will read it."""
    from streamhost.gateway.settings import SettingsError, state_dir_for

    try:
        return state_dir_for(state, os.environ)
    except SettingsError as error:
        raise CommandError(str(error)) from None


def _check_state_free(state: str | None) -> None:
    """``CommandError`` naming the gateway or ``up`` that holds the state, if one does."""
    from streamhost.gateway.state_lock import StateInUse, current_holder

    url, folder = _state_of(state)
    holder = current_holder(url, folder)
    if holder is not None:
        raise CommandError(str(StateInUse(str(folder), holder)))


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _get(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class _Child:
    """A process ``up`` started, leader of its own process group."""

    name: str
    process: subprocess.Popen
    log: Path
    descendants: list[psutil.Process] = field(default_factory=list)

    def alive(self) -> bool:
        return self.process.poll() is None

    def remember_descendants(self) -> None:
        with contextlib.suppress(psutil.Error):
            self.descendants = psutil.Process(self.process.pid).children(recursive=True)

    def signal(self, signum: int) -> None:
        signal_group(self.process.pid, signum)


def _start(
    name: str, command: list[str], log: Path, env: dict[str, str], children: list[_Child]
) -> _Child:
    """Start ``command`` in its own process group, its output appended to ``log``; it joins
    ``children`` at once, so that nothing started escapes the shutdown."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as handle:
        handle.write(f"\n{_START_BANNER} {' '.join(command)}\n".encode())
        handle.flush()
        children.append(
            _Child(
                name,
                subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                    env=env,
                    **own_group(exit_with_parent()),
                ),
                log,
            )
        )
    return children[-1]


def _wait_ready(child: _Child, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not _get(url):
        if not child.alive():
            raise CommandError(_exited(child))
        if time.monotonic() > deadline:
            raise CommandError(f"the {child.name} did not answer {url} within {timeout:.0f} s")
        time.sleep(0.2)


def _exited(child: _Child) -> str:
    """One line: how ``child`` ended, the failure its log states last (if any), its log."""
    from streamhost.endpoints.errors import log_cause, one_line

    lines = _tail(child.log).splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(_START_BANNER)]
    cause = log_cause(lines[starts[-1] + 1 :] if starts else lines)  # this run's lines only
    because = f": {one_line(cause)}" if cause else ""
    return (
        f"the {child.name} exited with status {child.process.returncode}{because}; see: {child.log}"
    )


def _stop(child: _Child, timeout: float, hurry: Callable[[], bool]) -> None:
    """SIGTERM the child's group, wait (less if ``hurry``), SIGKILL what is left of it and of
    every process it had started."""
    child.remember_descendants()
    stop_process(child.alive, child.signal, timeout, hurry=hurry)
    stop_leftovers(child.descendants, _LEFTOVER_STOP_TIMEOUT)


def _banner(
    gateway_url: str,
    ui_url: str | None,
    keys: dict[str, str],
    spec: DeploySpec,
    credentials: Path,
    logs: Path,
) -> str:
    """What to print once everything is up: addresses, environment, a boto3 example."""
    body = (
        '{"inputs": "what is life?", "parameters": {"max_new_tokens": 64}, "stream": True}'
        if spec.api == "tgi"
        else '{"inputs": "what is life?", "parameters": {"max_new_tokens": 64}}'
    )
    lines = ["", "streamhost is up"]
    if ui_url:
        lines.append(f"  chat UI      {ui_url}")
    lines += [
        f"  gateway      {gateway_url}  (SageMaker API, SigV4)",
        f"  endpoint     {spec.name}  ({spec.model}, {spec.api.upper()} API)",
        f"  credentials  {credentials}",
        f"  logs         {logs}  (and: streamhost logs {spec.name})",
        "",
        "Use it from another shell:",
        "",
        f"export AWS_ACCESS_KEY_ID={keys['aws_access_key_id']} "
        f"AWS_SECRET_ACCESS_KEY={keys['aws_secret_access_key']} "
        f"AWS_ENDPOINT_URL_SAGEMAKER={gateway_url} "
        f"AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME={gateway_url} "
        f"AWS_ENDPOINT_URL_CLOUDWATCH={gateway_url} "
        f"AWS_ENDPOINT_URL_APPLICATION_AUTO_SCALING={gateway_url} "
        f"AWS_DEFAULT_REGION={REGION}",
        "",
        "import json, boto3",
        "from streamhost.client import stream_text",
        "",
        'smr = boto3.client("sagemaker-runtime")  # reads the AWS_* variables above',
        f"body = {body}",
        "response = smr.invoke_endpoint_with_response_stream(",
        f'    EndpointName="{spec.name}", Body=json.dumps(body)',
        ")",
        "for text in stream_text(response):",
        '    print(text, end="", flush=True)',
        "",
        f"A conversation on one bidirectional stream: streamhost chat {spec.name} --bidi",
        "(AWS's HTTP/2 client needs streamhost gateway --tls-cert/--tls-key: "
        "docs/bidirectional.md).",
        "",
        "Ctrl-C stops everything.",
    ]
    return "\n".join(lines)


def run_up(
    port: int = 8080,
    ui_port: int = 8501,
    model: str = "tiny-chat",
    api: str = "tgi",
    no_ui: bool = False,
    state: str | None = None,
) -> int:
    """Run gateway, endpoint ``default`` and chat UI until SIGINT/SIGTERM/SIGHUP; the exit
    status (0 after a signal, 1 after a failure).

    Progress goes to stderr, the addresses and the boto3 example to stdout. Everything
    started is stopped on the way out, whatever ends the run.
    """
    console = Console(stderr=True, highlight=False, soft_wrap=True)

    def say(text: str, style: str | None = None) -> None:
        with contextlib.suppress(OSError):  # the terminal may be gone (SIGHUP)
            console.print(text, markup=False, style=style)

    children: list[_Child] = []
    gateway_url = f"http://{HOST}:{port}"
    status = 1
    with stop_signals() as received:
        try:
            _serve(port, ui_port, model, api, no_ui, state, console, children)
        except Stop:
            say("\nStopping…")
            status = 0
        except CommandError as error:
            say(f"streamhost up: {error}", style="red")
        except Exception as error:
            from streamhost.endpoints.errors import describe_error

            say(f"streamhost up: {describe_error(error, gateway_url)}", style="red")
        finally:
            if not received:
                received.append(0)  # from here on a signal only hurries the shutdown
            _stop_all(children, lambda: len(received) > 1)
    if children:
        say("Stopped.")
    return status


def _stop_all(children: list[_Child], hurry: Callable[[], bool]) -> None:
    """Stop the children, newest first; restarted if a signal lands before it is armed."""
    while True:
        try:
            for child in reversed(children):
                timeout = _GATEWAY_STOP_TIMEOUT if child.name == "gateway" else _UI_STOP_TIMEOUT
                _stop(child, timeout, hurry)
            return
        except Stop:
            continue


def _serve(
    port: int,
    ui_port: int,
    model: str,
    api: str,
    no_ui: bool,
    state: str | None,
    console: Console,
    children: list[_Child],
) -> None:
    """Start everything, then watch it until a signal (or a child's death) ends the run."""
    gateway_url = f"http://{HOST}:{port}"
    if api not in ("tgi", "lmi"):
        raise CommandError(f"--api must be tgi or lmi, got {api!r}")
    _check_state_free(state)
    _check_port_free(port, "gateway")
    ui_url = None
    if not no_ui:
        if ui_port == port:
            raise CommandError("--ui-port must differ from --port")
        _check_port_free(ui_port, "chat UI")
        ui_url = f"http://{HOST}:{ui_port}"
    credentials = credentials_file()
    keys = ensure_credentials(credentials)
    _, logs = _state_of(state)
    env = dict(os.environ)
    command = _gateway_command(port, credentials, state, ui_url)
    with console.status(f"Starting the gateway on {gateway_url}"):
        gateway = _start("gateway", command, logs / "up-gateway.log", env, children)
        ui = None
        if ui_url is not None:  # at once: it is ready by the time `default` is
            ui_env = {**env, GATEWAY_URL_ENV: gateway_url, ENDPOINT_ENV: DEFAULT_ENDPOINT}
            ui_command = streamlit_command(ui_port, HOST)
            ui = _start("chat UI", ui_command, logs / "up-ui.log", ui_env, children)
        try:
            _wait_ready(gateway, f"{gateway_url}/ping", _GATEWAY_START_TIMEOUT)
        except CommandError:
            if not gateway.alive():
                _check_state_free(state)  # another `up` took the state first: name it
            raise
    console.print(f"Gateway on {gateway_url} (log {gateway.log}).")
    from botocore.config import Config

    from streamhost.client import sagemaker_client
    from streamhost.deploy import DeploySpec, ensure_endpoint

    sm = sagemaker_client(
        gateway_url,
        region=REGION,
        credentials=keys,
        config=Config(connect_timeout=3, read_timeout=60, retries={"total_max_attempts": 2}),
    )
    outcome, spec = ensure_endpoint(
        sm, DeploySpec(name=DEFAULT_ENDPOINT, model=model, api=api), console
    )
    console.print(f"Endpoint {spec.name} is InService ({outcome}).")
    if ui is not None:
        with console.status(f"Starting the chat UI on {ui_url}"):
            _wait_ready(ui, f"{ui_url}/_stcore/health", _UI_START_TIMEOUT)
    # Plain print: no wrapping or markup, so every line copies and pastes as it is.
    print(_banner(gateway_url, ui_url, keys, spec, credentials, logs), flush=True)
    while True:
        for child in children:
            if not child.alive():
                raise CommandError(_exited(child))
        time.sleep(0.5)


def _gateway_command(
    port: int, credentials: Path, state: str | None, ui_url: str | None
) -> list[str]:
    """``streamhost gateway`` as ``up`` runs it."""
    command = [sys.executable, "-m", "streamhost.cli", "gateway", "--host", HOST]
    command += ["--port", str(port), "--credentials", str(credentials)]
    # Recorded in the state lock, so that a second `up` can say which one runs.
    command += ["--first-endpoint", DEFAULT_ENDPOINT, "--up-pid", str(os.getpid())] + (
        ["--ui-url", ui_url] if ui_url else []
    )
    return command + (["--state", state] if state else [])


def add_up_command(subparsers: Any) -> None:
    """Register ``up`` on ``subparsers`` (what ``add_subparsers`` returned); sets ``func``."""
    parser = subparsers.add_parser(
        "up",
        help="run everything: gateway, endpoint `default` and chat UI",
        description=(
            "Start the gateway, deploy endpoint `default` on a model (unless it is already "
            "there), start the chat UI and print how to use them from boto3. Ctrl-C stops "
            "everything it started. The first run writes a key pair to "
            "~/.config/streamhost/credentials."
        ),
        epilog=(
            "Examples:\n"
            "  streamhost up\n"
            "  streamhost up --model Qwen/Qwen2.5-0.5B-Instruct --api lmi --no-ui"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--port", type=int, default=8080, help="gateway port (8080)")
    parser.add_argument("--ui-port", type=int, default=8501, help="chat UI port (8501)")
    parser.add_argument(
        "--model",
        default="tiny-chat",
        help="model of endpoint `default` (tiny-chat): tiny-chat, tiny, random-1b, "
        "synthetic:DELAY_MS, a folder or a hub id",
    )
    parser.add_argument(
        "--api", default="tgi", choices=["tgi", "lmi"], help="container API to speak (tgi)"
    )
    parser.add_argument("--no-ui", action="store_true", help="do not start the chat UI")
    parser.add_argument(
        "--state",
        default=None,
        help="the gateway's state: SQLite file or SQLAlchemy URL "
        "(default ~/.local/state/streamhost/gateway.db)",
    )
    parser.set_defaults(func=_up)


def _up(args: argparse.Namespace) -> int:
    return run_up(
        port=args.port,
        ui_port=args.ui_port,
        model=args.model,
        api=args.api,
        no_ui=args.no_ui,
        state=args.state,
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m streamhost.up``: the ``up`` command alone."""
    parser = argparse.ArgumentParser(prog="streamhost")
    add_up_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["up", *(argv if argv is not None else sys.argv[1:])])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
