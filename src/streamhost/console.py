"""Terminal commands for a running gateway: ``deploy``, ``endpoints``, ``invoke``, ``chat``, ``ui``.

Each command talks to the gateway with boto3 exactly as any SageMaker user would, so every
step here is also an example of the protocol. ``add_commands`` registers them on the
``streamhost`` parser; ``python -m streamhost.console`` runs them alone.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import re
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

from botocore.exceptions import ClientError
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from streamhost.endpoints.clients import (
    DEFAULT_ENDPOINT,
    ENDPOINT_ENV,
    GATEWAY_URL_ENV,
    control_client,
    default_gateway_url,
    invocation_client,
)
from streamhost.endpoints.conversation import turn_prompt
from streamhost.endpoints.discovery import (
    IN_SERVICE,
    EndpointInfo,
    describe_endpoint,
    list_endpoints,
)
from streamhost.endpoints.errors import describe_error, error_code
from streamhost.endpoints.invocation import (
    GenerationParameters,
    close_session,
    invoke,
    open_session,
    request_body,
    start_generation,
)
from streamhost.processes import Stop, exit_with_parent, stop_process, stop_signals

__all__ = [
    "DEFAULT_INSTANCE_TYPE",
    "EXECUTION_ROLE",
    "LMI_IMAGE",
    "TGI_IMAGE",
    "CommandError",
    "DeploySpec",
    "add_commands",
    "delete_endpoint",
    "deploy",
    "lmi_model_archive",
    "main",
    "model_data_dir",
    "model_reference",
    "streamlit_command",
    "wait_for_endpoint",
]

TGI_IMAGE = (
    "763104351884.dkr.ecr.us-east-1.amazonaws.com/"
    "huggingface-pytorch-tgi-inference:2.1-tgi2.0-gpu-py310-cu121-ubuntu22.04"
)
LMI_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/djl-inference:0.23.0-deepspeed0.9.5-cu118"
EXECUTION_ROLE = "arn:aws:iam::123456789012:role/service-role/streamhost"
DEFAULT_INSTANCE_TYPE = "ml.g5.2xlarge"
_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_POLL_SECONDS = 0.5
_UI_APP = Path(__file__).parent / "ui" / "app.py"
_UI_STOP_TIMEOUT = 10.0


class CommandError(Exception):
    """A command cannot go on; the message is the one line the user sees."""


# -- deploying -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeploySpec:
    """What ``streamhost deploy`` creates: one model behind one endpoint."""

    name: str
    model: str = "tiny"
    api: str = "tgi"
    instances: int = 1
    instance_type: str = DEFAULT_INSTANCE_TYPE


def model_data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where ``deploy --api lmi`` keeps model archives: ``$XDG_DATA_HOME/streamhost/model-data``."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base).expanduser() / "streamhost" / "model-data"


def model_reference(model: str) -> str:
    """A local folder as an absolute path (instances do not run in our working directory)."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


def lmi_model_archive(model: str, path: Path) -> Path:
    """Write the ``.tar.gz`` an LMI container loads: a ``serving.properties`` naming ``model``,
    streaming JSON lines as the SageMaker streaming blog configures it."""
    properties = (
        "engine=Python\n"
        f"option.model_id={model_reference(model)}\n"
        "option.rolling_batch=auto\n"
        "option.output_formatter=jsonlines\n"
        "option.enable_streaming=true\n"
    ).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        info = tarfile.TarInfo("serving.properties")
        info.size = len(properties)
        info.mode = 0o644
        info.mtime = int(time.time())
        archive.addfile(info, io.BytesIO(properties))
    return path


def _exists(sm: Any, name: str) -> bool:
    try:
        sm.describe_endpoint(EndpointName=name)
    except ClientError as error:
        if error_code(error) in ("ValidationException", "ValidationError", "ResourceNotFound"):
            return False
        raise
    return True


def deploy(
    sm: Any,
    spec: DeploySpec,
    *,
    wait: bool = True,
    console: Console | None = None,
    data_dir: Path | None = None,
) -> EndpointInfo:
    """Create the model, endpoint config and endpoint of ``spec``; wait for InService if asked.

    Model and config are named ``<name>-<timestamp>`` as the SageMaker SDK names them, so a
    redeploy after ``endpoints delete`` never collides with what is left.
    """
    if not _NAME.fullmatch(spec.name):
        raise CommandError(
            f"invalid endpoint name {spec.name!r}: letters, digits and hyphens, at most 63"
        )
    if spec.instances < 1:
        raise CommandError(f"--instances must be at least 1, got {spec.instances}")
    if _exists(sm, spec.name):
        raise CommandError(
            f"endpoint {spec.name} already exists: delete it first with "
            f"`streamhost endpoints delete {spec.name}`"
        )
    stamp = time.strftime("%Y%m%d-%H%M%S") + f"-{int(time.time() * 1000) % 1000:03d}"
    resource = f"{spec.name[: 62 - len(stamp)]}-{stamp}"
    archive: Path | None = None
    if spec.api == "lmi":
        archive = lmi_model_archive(
            spec.model, (data_dir or model_data_dir()) / f"{resource}.tar.gz"
        )
        container: dict[str, Any] = {"Image": LMI_IMAGE, "ModelDataUrl": archive.as_uri()}
    elif spec.api == "tgi":
        container = {
            "Image": TGI_IMAGE,
            "Environment": {"HF_MODEL_ID": model_reference(spec.model)},
        }
    else:
        raise CommandError(f"--api must be tgi or lmi, got {spec.api!r}")
    made: list[Callable[[], Any]] = []  # undo steps, should a later step be refused
    try:
        sm.create_model(
            ModelName=resource, PrimaryContainer=container, ExecutionRoleArn=EXECUTION_ROLE
        )
        made.append(lambda: sm.delete_model(ModelName=resource))
        sm.create_endpoint_config(
            EndpointConfigName=resource,
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "ModelName": resource,
                    "InstanceType": spec.instance_type,
                    "InitialInstanceCount": spec.instances,
                }
            ],
        )
        made.append(lambda: sm.delete_endpoint_config(EndpointConfigName=resource))
        sm.create_endpoint(EndpointName=spec.name, EndpointConfigName=resource)
    except Exception:
        for undo in reversed(made):
            with contextlib.suppress(Exception):
                undo()
        if archive is not None:
            archive.unlink(missing_ok=True)
        raise
    if not wait:
        return describe_endpoint(sm, spec.name)
    return wait_for_endpoint(sm, spec.name, console=console)


def wait_for_endpoint(
    sm: Any, name: str, *, console: Console | None = None, timeout: float = 1800.0
) -> EndpointInfo:
    """Show a spinner while ``name`` is Creating or Updating; its final description.

    ``CommandError`` when it fails (with SageMaker's FailureReason) or takes over ``timeout``.
    """
    console = console or Console(stderr=True)
    deadline = time.monotonic() + timeout
    info = describe_endpoint(sm, name)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(_progress_line(info), total=None)
        while info.status in ("Creating", "Updating", "SystemUpdating"):
            if time.monotonic() > deadline:
                raise CommandError(
                    f"endpoint {name} is still {info.status} after {timeout:.0f} s; "
                    f"see `streamhost logs {name}`"
                )
            time.sleep(_POLL_SECONDS)
            info = describe_endpoint(sm, name)
            progress.update(task, description=_progress_line(info))
    if info.status != IN_SERVICE:
        reason = info.failure_reason or "no reason given"
        raise CommandError(
            f"endpoint {name} is {info.status}: {reason} (instance logs: `streamhost logs {name}`)"
        )
    return info


def _progress_line(info: EndpointInfo) -> str:
    model = f" · {info.model_id}" if info.model_id else ""
    api = f" ({info.api.upper()})" if info.api != "unknown" else ""
    healthy = info.instances or 0
    wanted = info.desired_instances or healthy
    instances = f" · {healthy}/{wanted} instances healthy" if wanted else ""
    return f"{info.status} endpoint {info.name}{model}{api}{instances}"


def delete_endpoint(
    sm: Any,
    name: str,
    *,
    keep_model: bool = False,
    data_dir: Path | None = None,
    timeout: float = 300.0,
) -> None:
    """Delete endpoint ``name``, then (unless ``keep_model``) its config, its models and the
    model archives ``deploy`` wrote for them."""
    info = describe_endpoint(sm, name)
    sm.delete_endpoint(EndpointName=name)
    deadline = time.monotonic() + timeout
    while _exists(sm, name):
        if time.monotonic() > deadline:
            raise CommandError(f"endpoint {name} was not deleted within {timeout:.0f} s")
        time.sleep(_POLL_SECONDS)
    if keep_model:
        return
    if info.config_name:
        with contextlib.suppress(ClientError):
            sm.delete_endpoint_config(EndpointConfigName=info.config_name)
    for model in info.model_names:
        with contextlib.suppress(ClientError):
            sm.delete_model(ModelName=model)
    ours = (data_dir or model_data_dir()).resolve()
    if info.model_data_url and info.model_data_url.startswith("file://"):
        archive = Path(info.model_data_url.removeprefix("file://"))
        if archive.parent.resolve() == ours:
            archive.unlink(missing_ok=True)


# -- invoking --------------------------------------------------------------------------------


def _ready_endpoint(sm: Any, name: str, api: str) -> EndpointInfo:
    info = describe_endpoint(sm, name)
    if info.status != IN_SERVICE:
        detail = f": {info.failure_reason}" if info.failure_reason else ""
        raise CommandError(f"endpoint {name} is {info.status}, not InService{detail}")
    if api != "auto":
        return replace(info, api=api)
    return info


def _stats(
    ttft: float | None, tokens: int | None, rate: float | None, *, label: str = "TTFT"
) -> str:
    parts = [f"{label} {ttft:.3f} s" if ttft is not None else f"{label} -"]
    parts.append(f"{tokens} tokens" if tokens else "- tokens")
    parts.append(f"{rate:.1f} tokens/s" if rate is not None else "- tokens/s")
    return " · ".join(parts)


def _stream_answer(
    smr: Any,
    endpoint: str,
    body: bytes,
    out: TextIO,
    err: TextIO,
    *,
    session_id: str | None = None,
) -> bool:
    """Print the answer as it streams, then its timings on ``err``; False if Ctrl-C stopped it."""
    generation = start_generation(smr, endpoint, body, session_id=session_id)
    try:
        for text in generation:
            out.write(text)
            out.flush()
    except KeyboardInterrupt:
        generation.stop()
    out.write("\n")
    out.flush()
    note = " · stopped" if generation.stopped else ""
    err.write(
        _stats(generation.ttft, generation.tokens, generation.tokens_per_second) + note + "\n"
    )
    err.flush()
    return not generation.stopped


def run_invoke(
    gateway_url: str,
    endpoint: str,
    prompt: str,
    *,
    stream: bool = False,
    parameters: GenerationParameters = GenerationParameters(),
    api: str = "auto",
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """``streamhost invoke``: one prompt, its answer on ``out``, its timings on ``err``
    (default: stdout and stderr)."""
    out, err = out or sys.stdout, err or sys.stderr
    sm, smr = control_client(gateway_url), invocation_client(gateway_url)
    info = _ready_endpoint(sm, endpoint, api)
    body = request_body(info.api, prompt, parameters, stream=stream)
    if stream:
        return 0 if _stream_answer(smr, endpoint, body, out, err) else 130
    completion = invoke(smr, endpoint, body)
    out.write(completion.text + "\n")
    out.flush()
    err.write(
        _stats(completion.latency, completion.tokens, completion.tokens_per_second, label="latency")
        + "\n"
    )
    return 0


def _session_problem(error: BaseException) -> bool:
    """Whether an invocation failed because its session is unknown, expired or gone."""
    text = describe_error(error, "").lower()
    return "session" in text and ("not found" in text or "no longer" in text or "expired" in text)


def run_chat(
    gateway_url: str,
    endpoint: str,
    *,
    parameters: GenerationParameters = GenerationParameters(),
    api: str = "auto",
    read: Callable[[str], str] = input,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """``streamhost chat``: a conversation kept in a stateful session on the endpoint.

    Each turn sends only the new message with ``SessionId``; the model server prepends the
    history and routing sticks to the instance that holds it. ``/new`` starts over, ``/exit``
    (or end of input) leaves and closes the session. Ctrl-C stops an answer; an answer
    stopped early is not remembered by the session (the server keeps finished turns only).
    """
    out, err = out or sys.stdout, err or sys.stderr
    sm, smr = control_client(gateway_url), invocation_client(gateway_url)
    info = _ready_endpoint(sm, endpoint, api)
    session = open_session(smr, endpoint)
    first = True
    err.write(
        f"Chatting with {endpoint} ({info.api.upper()} API). /new starts over, /exit leaves.\n"
    )
    try:
        while True:
            try:
                line = read("you> ")
            except (EOFError, KeyboardInterrupt):
                out.write("\n")
                break
            message = line.strip()
            if not message:
                continue
            if message in ("/exit", "/quit"):
                break
            if message == "/new":
                with contextlib.suppress(Exception):
                    close_session(smr, endpoint, session)
                session, first = open_session(smr, endpoint), True
                err.write("(new conversation)\n")
                continue
            body = request_body(info.api, turn_prompt(message, first=first), parameters)
            out.write("bot> ")
            out.flush()
            try:
                if _stream_answer(smr, endpoint, body, out, err, session_id=session):
                    first = False
            except Exception as error:
                if not _session_problem(error):
                    raise
                session, first = open_session(smr, endpoint), True
                err.write("(the session had ended; a new conversation started, ask again)\n")
    finally:
        with contextlib.suppress(Exception):
            close_session(smr, endpoint, session)
    return 0


# -- the UI ----------------------------------------------------------------------------------


def streamlit_command(port: int, address: str = "127.0.0.1") -> list[str]:
    """The command line that serves the chat UI with Streamlit."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(_UI_APP),
        "--server.port",
        str(port),
        "--server.address",
        address,
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        # No "Deploy" (to Streamlit's cloud) button: this app is already deployed.
        "--client.toolbarMode",
        "minimal",
    ]


def run_ui(gateway_url: str, *, port: int = 8501, endpoint: str = DEFAULT_ENDPOINT) -> int:
    """``streamhost ui``: serve the chat UI until Ctrl-C, SIGTERM or SIGHUP (exit status 128 +
    the signal's number), stopping the Streamlit server with it."""
    env = {**os.environ, GATEWAY_URL_ENV: gateway_url, ENDPOINT_ENV: endpoint}
    Console(stderr=True).print(
        f"Chat UI on [bold]http://127.0.0.1:{port}[/] (gateway {gateway_url}); Ctrl-C stops it."
    )
    process = None
    with stop_signals():
        try:
            process = subprocess.Popen(
                streamlit_command(port), env=env, preexec_fn=exit_with_parent()
            )
            return process.wait()
        except Stop as stop:
            if process is not None:
                child = process
                stop_process(lambda: child.poll() is None, child.send_signal, _UI_STOP_TIMEOUT)
            return 128 + stop.args[0]


# -- argparse glue ---------------------------------------------------------------------------


def _command(
    name: str, body: Callable[[argparse.Namespace, str], int]
) -> Callable[[argparse.Namespace], int]:
    """Run ``body`` with the gateway URL resolved; any failure is one line and exit code 1."""

    def run(args: argparse.Namespace) -> int:
        gateway_url = (args.gateway or default_gateway_url()).rstrip("/")
        if not logging.getLogger().isEnabledFor(logging.DEBUG):
            # botocore narrates at INFO ("Found credentials in ..."): noise in a terminal tool.
            logging.getLogger("botocore").setLevel(logging.WARNING)
        try:
            return body(args, gateway_url)
        except CommandError as error:
            print(f"streamhost {name}: {error}", file=sys.stderr)
        except KeyboardInterrupt:
            print(f"streamhost {name}: interrupted", file=sys.stderr)
            return 130
        except Exception as error:
            print(f"streamhost {name}: {describe_error(error, gateway_url)}", file=sys.stderr)
        return 1

    return run


def _deploy(args: argparse.Namespace, gateway_url: str) -> int:
    spec = DeploySpec(
        name=args.name,
        model=args.model,
        api=args.api,
        instances=args.instances,
        instance_type=args.instance_type,
    )
    console = Console(stderr=True)
    info = deploy(control_client(gateway_url), spec, wait=args.wait, console=console)
    console.print(f"endpoint [bold]{info.name}[/] is {info.status} ({info.api.upper()} API)")
    return 0


def _endpoints(args: argparse.Namespace, gateway_url: str) -> int:
    sm = control_client(gateway_url)
    if args.action != "list" and not args.name:
        raise CommandError(f"`endpoints {args.action}` needs an endpoint NAME")
    if args.action == "describe":
        _print_description(describe_endpoint(sm, args.name))
    elif args.action == "delete":
        delete_endpoint(sm, args.name, keep_model=args.keep_model)
        print(f"deleted endpoint {args.name}")
    else:
        _print_table(list_endpoints(sm))
    return 0


def _print_table(infos: list[EndpointInfo]) -> None:
    console = Console()
    if not infos:
        console.print("no endpoints (create one with `streamhost deploy NAME --model tiny`)")
        return
    table = Table("NAME", "STATUS", "API", "MODEL", "INSTANCES", "TYPE", "CREATED", box=None)
    for info in infos:
        created = info.created.strftime("%Y-%m-%d %H:%M") if info.created else ""
        table.add_row(
            info.name,
            info.status,
            info.api,
            info.model_id or "",
            f"{info.instances or 0}/{info.desired_instances or 0}",
            info.instance_type or "",
            created,
        )
    console.print(table)


def _print_description(info: EndpointInfo) -> None:
    rows = {
        "name": info.name,
        "status": info.status,
        "failure reason": info.failure_reason,
        "api": info.api,
        "model": info.model_id,
        "image": info.image,
        "model data": info.model_data_url,
        "instance type": info.instance_type,
        "instances": f"{info.instances or 0} of {info.desired_instances or 0}",
        "endpoint config": info.config_name,
        "models": ", ".join(info.model_names) or None,
        "created": info.created.isoformat() if info.created else None,
    }
    for key, value in rows.items():
        if value:
            print(f"{key + ':':17}{value}")


def _parameters(args: argparse.Namespace) -> GenerationParameters:
    if not 1 <= args.max_new_tokens <= 100_000:
        raise CommandError(f"--max-new-tokens must be positive, got {args.max_new_tokens}")
    if args.temperature <= 0:
        raise CommandError(f"--temperature must be above 0, got {args.temperature}")
    return GenerationParameters(max_new_tokens=args.max_new_tokens, temperature=args.temperature)


def _invoke(args: argparse.Namespace, gateway_url: str) -> int:
    return run_invoke(
        gateway_url,
        args.name,
        args.prompt,
        stream=args.stream,
        parameters=_parameters(args),
        api=args.api,
    )


def _chat(args: argparse.Namespace, gateway_url: str) -> int:
    return run_chat(gateway_url, args.name, parameters=_parameters(args), api=args.api)


def _ui(args: argparse.Namespace, gateway_url: str) -> int:
    return run_ui(gateway_url, port=args.port, endpoint=args.endpoint)


def _gateway_option() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--gateway",
        default=None,
        metavar="URL",
        help=f"gateway URL (default ${GATEWAY_URL_ENV} or http://127.0.0.1:8080)",
    )
    return common


def _generation_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-new-tokens", type=int, default=400, help="tokens to generate at most (400)"
    )
    parser.add_argument("--temperature", type=float, default=0.1, help="sampling temperature (0.1)")
    parser.add_argument(
        "--api",
        default="auto",
        choices=["auto", "tgi", "lmi"],
        help="request format (auto: read from the endpoint's image)",
    )


def add_commands(subparsers: Any) -> None:
    """Register ``deploy``, ``endpoints``, ``invoke``, ``chat`` and ``ui`` on ``subparsers``
    (what ``ArgumentParser.add_subparsers`` returned); each sets ``func(args) -> int``."""
    common = [_gateway_option()]
    raw = argparse.RawDescriptionHelpFormatter

    deploy_parser = subparsers.add_parser(
        "deploy",
        parents=common,
        formatter_class=raw,
        help="deploy a model behind a new endpoint",
        description=(
            "Create a model, an endpoint config and an endpoint on the gateway, as the "
            "SageMaker SDK does, and wait until the endpoint is InService."
        ),
        epilog=(
            "Examples:\n"
            "  streamhost deploy chat --model tiny\n"
            "  streamhost deploy falcon --model ./my-model --api lmi --instances 2"
        ),
    )
    deploy_parser.add_argument("name", help="endpoint name")
    deploy_parser.add_argument(
        "--model",
        required=True,
        help="model id: tiny, random-1b, synthetic:DELAY_MS, a local folder or a Hugging Face id",
    )
    deploy_parser.add_argument(
        "--api",
        default="tgi",
        choices=["tgi", "lmi"],
        help="container to stand in for: TGI (HF_MODEL_ID) or LMI (serving.properties); tgi",
    )
    deploy_parser.add_argument("--instances", type=int, default=1, help="instance count (1)")
    deploy_parser.add_argument(
        "--instance-type",
        default=DEFAULT_INSTANCE_TYPE,
        help=f"SageMaker instance type ({DEFAULT_INSTANCE_TYPE}; GPU types use a GPU if any)",
    )
    deploy_parser.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="wait until the endpoint is InService (default: wait)",
    )
    deploy_parser.set_defaults(func=_command("deploy", _deploy))

    endpoints_parser = subparsers.add_parser(
        "endpoints",
        parents=common,
        formatter_class=raw,
        help="list, describe or delete endpoints",
        description="List the gateway's endpoints, describe one, or delete one.",
        epilog=(
            "Examples:\n"
            "  streamhost endpoints\n"
            "  streamhost endpoints describe default\n"
            "  streamhost endpoints delete chat"
        ),
    )
    endpoints_parser.add_argument(
        "action", nargs="?", default="list", choices=["list", "describe", "delete"]
    )
    endpoints_parser.add_argument("name", nargs="?", help="endpoint name (describe, delete)")
    endpoints_parser.add_argument(
        "--keep-model",
        action="store_true",
        help="delete: keep the endpoint config and model",
    )
    endpoints_parser.set_defaults(func=_command("endpoints", _endpoints))

    invoke_parser = subparsers.add_parser(
        "invoke",
        parents=common,
        formatter_class=raw,
        help="send one prompt to an endpoint",
        description=(
            "Send one prompt with InvokeEndpoint, or InvokeEndpointWithResponseStream with "
            "--stream (tokens are printed as they arrive). Timings go to stderr."
        ),
        epilog='Example: streamhost invoke default "what is SageMaker inference?" --stream',
    )
    invoke_parser.add_argument("name", help="endpoint name")
    invoke_parser.add_argument("prompt", help="the prompt")
    invoke_parser.add_argument(
        "--stream", action="store_true", help="stream the answer token by token"
    )
    _generation_options(invoke_parser)
    invoke_parser.set_defaults(func=_command("invoke", _invoke))

    chat_parser = subparsers.add_parser(
        "chat",
        parents=common,
        formatter_class=raw,
        help="chat with an endpoint in the terminal",
        description=(
            "A terminal chat that keeps the conversation in a stateful session on the "
            "endpoint. /new starts over, /exit leaves; Ctrl-C stops an answer."
        ),
        epilog="Example: streamhost chat default --max-new-tokens 200",
    )
    chat_parser.add_argument("name", help="endpoint name")
    _generation_options(chat_parser)
    chat_parser.set_defaults(func=_command("chat", _chat))

    ui_parser = subparsers.add_parser(
        "ui",
        parents=common,
        formatter_class=raw,
        help="serve the chat UI (Streamlit)",
        description="Serve the Streamlit chat UI for the gateway's endpoints on 127.0.0.1.",
        epilog="Example: streamhost ui --port 8501 --gateway http://127.0.0.1:8080",
    )
    ui_parser.add_argument("--port", type=int, default=8501, help="port (8501)")
    ui_parser.add_argument(
        "--endpoint",
        default=DEFAULT_ENDPOINT,
        help=f"endpoint preselected in the UI ({DEFAULT_ENDPOINT})",
    )
    ui_parser.set_defaults(func=_command("ui", _ui))


def main(argv: list[str] | None = None) -> int:
    """``python -m streamhost.console COMMAND ...``: these commands without the rest."""
    parser = argparse.ArgumentParser(prog="streamhost", description=__doc__)
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
