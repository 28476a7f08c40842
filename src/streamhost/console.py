"""Terminal commands for a running gateway: ``deploy``, ``endpoints``, ``invoke``, ``chat``, ``ui``.

Each command talks to the gateway with boto3 exactly as any SageMaker user would, so every
step here is also an example of the protocol. ``add_commands`` registers them on the
``streamhost`` parser; ``python -m streamhost.console`` runs them alone.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import time
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from streamhost.chat import run_chat, run_invoke
from streamhost.command import CommandError, gateway_command, gateway_option
from streamhost.deploy import DEFAULT_INSTANCE_TYPE, DeploySpec, delete_endpoint, deploy
from streamhost.endpoints.clients import (
    DEFAULT_ENDPOINT,
    autoscaling_client,
    cloudwatch_client,
    control_client,
)
from streamhost.endpoints.discovery import EndpointInfo, describe_endpoint, list_endpoints
from streamhost.endpoints.errors import split_reason
from streamhost.endpoints.figures import scaling_activities, variant_figures
from streamhost.endpoints.invocation import GenerationParameters
from streamhost.ui.launch import run_ui

__all__ = ["add_commands", "endpoint_record", "main"]

_MIN_FOLDED = 6  # a folded MODEL or TYPE column is never narrower than this
_ACTIONS = ("list", "describe", "delete")  # of `streamhost endpoints`


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
    if args.action not in _ACTIONS:
        if not (args.watch and args.name is None):
            raise CommandError(
                f"`endpoints {args.action}`: the actions are list, describe and delete"
            )
        args.action, args.name = "list", args.action  # `endpoints --watch NAME`
    if args.watch:
        if args.action != "list":
            raise CommandError("--watch goes with the endpoint list (`endpoints --watch [NAME]`)")
        return _watch(sm, gateway_url, args)
    if args.action != "list" and not args.name:
        raise CommandError(f"`endpoints {args.action}` needs an endpoint NAME")
    if args.action == "describe":
        info = describe_endpoint(sm, args.name)
        if args.output == "json":
            print(json.dumps(endpoint_record(info), indent=2))
        else:
            _print_description(info)
    elif args.action == "delete":
        delete_endpoint(sm, args.name, keep_model=args.keep_model)
        print(f"deleted endpoint {args.name}")
    elif args.output == "json":
        print(json.dumps([endpoint_record(info) for info in list_endpoints(sm)], indent=2))
    else:
        _print_table(list_endpoints(sm), Console())
    return 0


def _watch(sm: Any, gateway_url: str, args: argparse.Namespace) -> int:
    """The endpoints' live figures, refreshed every `--interval` seconds until Ctrl-C (or
    `--count` refreshes): in place on a terminal, one table after another otherwise."""
    cloudwatch, scaling = cloudwatch_client(gateway_url), autoscaling_client(gateway_url)
    console = Console()
    live = Live(console=console, auto_refresh=False) if console.is_terminal else None
    shown = 0
    try:
        with live or contextlib.nullcontext():
            while True:
                table = _figures_table(sm, cloudwatch, scaling, args.name)
                if live is not None:
                    live.update(table, refresh=True)
                else:
                    console.print(f"{time.strftime('%H:%M:%S')}  last 60 s")
                    console.print(table)
                shown += 1
                if args.count and shown >= args.count:
                    return 0
                time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0


def _figures_table(sm: Any, cloudwatch: Any, scaling: Any, only: str | None) -> Table:
    """Each variant's last minute: instances, invocations, in flight, TTFB, errors, and its
    latest scaling activity."""
    names = [only] if only else [info.name for info in list_endpoints(sm)]
    rows: list[tuple[str, str, str, str]] = []  # endpoint, variant, status, desired/current
    for name in names:
        described = sm.describe_endpoint(EndpointName=name)
        for variant in described.get("ProductionVariants") or []:
            counts = (
                f"{variant.get('CurrentInstanceCount', 0)}/{variant.get('DesiredInstanceCount', 0)}"
            )
            rows.append((name, variant["VariantName"], described["EndpointStatus"], counts))
    figures = variant_figures(cloudwatch, [(row[0], row[1]) for row in rows])
    table = Table(box=None, collapse_padding=True, pad_edge=False)
    for header in ("ENDPOINT", "VARIANT", "STATUS", "INSTANCES", "INV/MIN", "IN FLIGHT"):
        table.add_column(header, no_wrap=True)
    table.add_column("TTFB", no_wrap=True, justify="right")
    table.add_column("ERRORS", no_wrap=True)
    table.add_column("LAST SCALING", overflow="fold")
    for (endpoint, variant, status, counts), figure in zip(rows, figures, strict=True):
        activities = scaling_activities(scaling, endpoint, variant)
        last = ""
        if activities:
            latest = activities[0]
            last = f"{latest['Description']} {latest['StatusCode']}"
        ttfb = figure.ttfb_ms
        table.add_row(
            endpoint,
            variant,
            status,
            counts,
            f"{figure.total('Invocations'):g}",
            f"{figure.in_flight:.1f}",
            "-" if ttfb is None else f"{ttfb:.0f} ms",
            f"{figure.total('InvocationModelErrors'):g}",
            last,
        )
    if not rows:
        table.add_row("(no endpoints)", *[""] * 8)
    return table


def endpoint_record(info: EndpointInfo) -> dict[str, Any]:
    """An endpoint as ``--output json`` prints it: every field, the time in ISO 8601."""
    record = dataclasses.asdict(info)
    record["model_names"] = list(info.model_names)
    record["created"] = info.created.isoformat() if info.created else None
    return record


def _print_table(infos: list[EndpointInfo], console: Console) -> None:
    """The endpoints as a table that never cuts a name: the creation time wraps after its
    date, the model and instance type fold, and a name too long for the terminal widens the
    table past it rather than lose a character."""
    if not infos:
        console.print("no endpoints (create one with `streamhost deploy NAME --model tiny`)")
        return
    rows = [_row(info) for info in infos]
    headers = ("NAME", "STATUS", "API", "MODEL", "INSTANCES", "TYPE", "CREATED")
    widths = [max(len(header), *(len(row[i]) for row in rows)) for i, header in enumerate(headers)]
    # Columns are one space apart (and one follows the last); the rest is for the three
    # that may take more than one line: MODEL and TYPE fold, CREATED wraps to its date.
    room = console.width - sum(widths[i] for i in (0, 1, 2, 4)) - len(headers)
    created_width = widths[6] if widths[3] + widths[5] + widths[6] <= room else len("YYYY-MM-DD")
    model_width, type_width = _folded_widths(room - created_width, widths[3], widths[5])
    table = Table(box=None, collapse_padding=True, pad_edge=False)
    for header in ("NAME", "STATUS", "API"):
        table.add_column(header, no_wrap=True)
    table.add_column("MODEL", overflow="fold", max_width=model_width)
    table.add_column("INSTANCES", no_wrap=True)
    table.add_column("TYPE", overflow="fold", max_width=type_width)
    table.add_column("CREATED", max_width=created_width)
    for row in rows:
        table.add_row(*row)
    needed = console.width - room + model_width + type_width + created_width
    if needed > console.width:  # (print's own width= is capped at the console's)
        console = Console(file=console.file, width=needed)
    console.print(table)


def _row(info: EndpointInfo) -> tuple[str, ...]:
    created = info.created.strftime("%Y-%m-%d %H:%M") if info.created else ""
    return (
        info.name,
        info.status,
        info.api,
        info.model_id or "",
        f"{info.instances or 0}/{info.desired_instances or 0}",
        info.instance_type or "",
        created,
    )


def _folded_widths(room: int, model: int, kind: int) -> tuple[int, int]:
    """Widths of the MODEL and TYPE columns in ``room`` characters: whole if they fit, else
    folded, TYPE to half the room at most, neither below `_MIN_FOLDED`."""
    if model + kind <= room:
        return model, kind
    kind = min(kind, max(_MIN_FOLDED, room // 2))
    return min(model, max(_MIN_FOLDED, room - kind)), kind


def _print_description(info: EndpointInfo) -> None:
    message, log_lines = split_reason(info.failure_reason or "")
    rows = {
        "name": info.name,
        "status": info.status,
        "failure reason": message,
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
        if key == "failure reason" and log_lines:
            # The log tail the gateway joined with " | ", a line each again.
            print(f"{'last log lines:':17}{log_lines[0]}")
            for line in log_lines[1:]:
                print(f"{'':17}{line}")


def _parameters(args: argparse.Namespace) -> GenerationParameters:
    if not 1 <= args.max_new_tokens <= 100_000:
        raise CommandError(f"--max-new-tokens must be positive, got {args.max_new_tokens}")
    if not args.temperature >= 0:  # NaN too
        raise CommandError(f"--temperature must be 0 (greedy) or above, got {args.temperature}")
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
    return run_chat(
        gateway_url, args.name, parameters=_parameters(args), api=args.api, bidi=args.bidi
    )


def _ui(args: argparse.Namespace, gateway_url: str) -> int:
    return run_ui(gateway_url, port=args.port, endpoint=args.endpoint)


def _generation_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-new-tokens", type=int, default=400, help="tokens to generate at most (400)"
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=0.1,
        help="sampling temperature; 0 is greedy decoding (0.1)",
    )
    parser.add_argument(
        "--api",
        default="auto",
        choices=["auto", "tgi", "lmi"],
        help="request format (auto: read from the endpoint's image)",
    )


def add_commands(subparsers: Any) -> None:
    """Register ``deploy``, ``endpoints``, ``invoke``, ``chat`` and ``ui`` on ``subparsers``
    (what ``ArgumentParser.add_subparsers`` returned); each sets ``func(args) -> int``."""
    common = [gateway_option()]
    for add in (_add_deploy, _add_endpoints, _add_invoke, _add_chat, _add_ui):
        add(subparsers, common)


def _add_deploy(subparsers: Any, common: list[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "deploy",
        parents=common,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    parser.add_argument("name", help="endpoint name")
    parser.add_argument(
        "--model",
        required=True,
        help="model id: tiny, tiny-chat, random-1b, synthetic:DELAY_MS, a local folder or a Hugging Face id",
    )
    parser.add_argument(
        "--api",
        default="tgi",
        choices=["tgi", "lmi"],
        help="container to stand in for: TGI (HF_MODEL_ID) or LMI (serving.properties); tgi",
    )
    parser.add_argument("--instances", type=int, default=1, help="instance count (1)")
    parser.add_argument(
        "--instance-type",
        default=DEFAULT_INSTANCE_TYPE,
        help=f"SageMaker instance type ({DEFAULT_INSTANCE_TYPE}; GPU types use a GPU if any)",
    )
    parser.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="wait until the endpoint is InService (default: wait)",
    )
    parser.set_defaults(func=gateway_command("deploy", _deploy))


def _add_endpoints(subparsers: Any, common: list[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "endpoints",
        parents=common,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="list, describe or delete endpoints",
        description=(
            "List the gateway's endpoints, describe one, or delete one. An endpoint being\n"
            "created or updated (by a scaling activity too) is deleted once that is over."
        ),
        epilog=(
            "Examples:\n"
            "  streamhost endpoints\n"
            "  streamhost endpoints describe default\n"
            "  streamhost endpoints --output json\n"
            "  streamhost endpoints --watch\n"
            "  streamhost endpoints delete chat"
        ),
    )
    parser.add_argument(
        "action", nargs="?", default="list", help="list (default), describe or delete"
    )
    parser.add_argument("name", nargs="?", help="endpoint name (describe, delete)")
    parser.add_argument(
        "--keep-model",
        action="store_true",
        help="delete: keep the endpoint config and model",
    )
    parser.add_argument(
        "--output",
        default="table",
        choices=["table", "json"],
        help="list, describe: a table for people (default) or JSON, every field of each endpoint",
    )
    parser.add_argument(
        "--watch",
        action="store_true",
        help="list: live figures of each variant over the last minute (instances, "
        "invocations, requests in flight, time to first byte, errors, latest scaling), "
        "refreshed until Ctrl-C; give a NAME for one endpoint",
    )
    parser.add_argument(
        "--interval", type=float, default=2.0, help="--watch: seconds between refreshes (2)"
    )
    parser.add_argument(
        "--count", type=int, default=0, help="--watch: stop after this many refreshes"
    )
    parser.set_defaults(func=gateway_command("endpoints", _endpoints))


def _add_invoke(subparsers: Any, common: list[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "invoke",
        parents=common,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="send one prompt to an endpoint",
        description=(
            "Send one prompt with InvokeEndpoint, or InvokeEndpointWithResponseStream with "
            "--stream (tokens are printed as they arrive). Timings go to stderr."
        ),
        epilog='Example: streamhost invoke default "what is SageMaker inference?" --stream',
    )
    parser.add_argument("name", help="endpoint name")
    parser.add_argument("prompt", help="the prompt")
    parser.add_argument("--stream", action="store_true", help="stream the answer token by token")
    _generation_options(parser)
    parser.set_defaults(func=gateway_command("invoke", _invoke))


def _add_chat(subparsers: Any, common: list[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "chat",
        parents=common,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="chat with an endpoint in the terminal",
        description=(
            "A terminal chat that keeps the conversation in a stateful session on the "
            "endpoint. /help lists the commands, /new starts over, /exit leaves; Ctrl-C "
            "stops an answer."
        ),
        epilog="Examples:\n  streamhost chat default --max-new-tokens 200\n  streamhost chat default --bidi",
    )
    parser.add_argument("name", help="endpoint name")
    parser.add_argument(
        "--bidi",
        action="store_true",
        help="hold the conversation on one bidirectional stream "
        "(InvokeEndpointWithBidirectionalStream) instead of a stateful session; "
        "Ctrl-C interrupts the answer on the stream",
    )
    _generation_options(parser)
    parser.set_defaults(func=gateway_command("chat", _chat))


def _add_ui(subparsers: Any, common: list[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "ui",
        parents=common,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="serve the chat UI (Streamlit)",
        description="Serve the Streamlit chat UI for the gateway's endpoints on 127.0.0.1.",
        epilog="Example: streamhost ui --port 8501 --gateway http://127.0.0.1:8080",
    )
    parser.add_argument("--port", type=int, default=8501, help="port (8501)")
    parser.add_argument(
        "--endpoint",
        default=DEFAULT_ENDPOINT,
        help=f"endpoint preselected in the UI ({DEFAULT_ENDPOINT})",
    )
    parser.set_defaults(func=gateway_command("ui", _ui))


def main(argv: list[str] | None = None) -> int:
    """``python -m streamhost.console COMMAND ...``: these commands without the rest."""
    parser = argparse.ArgumentParser(prog="streamhost", description=__doc__)
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
