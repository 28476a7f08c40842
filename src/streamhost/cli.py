"""The ``streamhost`` command."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from typing import Any


def _serve_model(args: argparse.Namespace) -> int:
    from streamhost.server.config import ConfigError, build_config

    try:
        config = build_config(
            model_dir=args.model_dir,
            model=args.model,
            api=args.api,
            engine=args.engine,
            port=args.port,
            host=args.host,
            request_timeout=args.request_timeout,
        )
    except ConfigError as exc:
        print(f"streamhost serve-model: {exc}", file=sys.stderr)
        return 2
    from streamhost.engine import EngineUnavailable, make_engine

    try:
        engine = make_engine(config.engine, process=config.engine_process)
    except EngineUnavailable as exc:
        print(f"streamhost serve-model: {exc}", file=sys.stderr)
        return 2
    engine.start()  # first: its process loads the model while this one imports the server
    import uvicorn

    from streamhost.server.app import create_app
    from streamhost.server.http import server_config

    if not _uvicorn_fits("serve-model"):
        return 1
    app = create_app(config, engine)
    server = uvicorn.Server(server_config(config, app, log_level=args.log_level))
    logging.getLogger("streamhost").info(
        "serving %s (%s API) on http://%s:%d",
        config.model_id or "custom handler",
        config.api,
        config.host,
        config.port,
    )
    server.run()
    return 0 if server.started else 3  # as uvicorn.run: 3 when the server could not start


def _uvicorn_fits(command: str) -> bool:
    """Whether the uvicorn installed has what streamhost's HTTP protocol uses; if not, why,
    in one line."""
    from streamhost.uvicorn_http import UvicornMismatch, check_uvicorn

    try:
        check_uvicorn()
    except UvicornMismatch as exc:
        print(f"streamhost {command}: {exc}", file=sys.stderr)
        return False
    return True


def _gateway(args: argparse.Namespace) -> int:
    import socket

    from streamhost.gateway.settings import SettingsError, build_settings

    try:
        settings = build_settings(
            host=args.host,
            port=args.port,
            state=args.state,
            state_dir=args.state_dir,
            credentials=args.credentials,
            region=args.region,
            account=args.account,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            http2_port=args.http2_port,
            no_auth=args.no_auth,
            insecure=args.insecure,
            stream_timeout=args.stream_timeout,
            idle_timeout=args.idle_timeout,
            request_timeout=args.request_timeout,
            keep_instances=args.keep_instances,
            first_endpoint=args.first_endpoint,
            provisioner=args.provisioner,
            ray_address=args.ray_address,
            ray_resource_scale=args.ray_resource_scale,
            ray_placement_timeout=args.ray_placement_timeout,
            ray_ship_models=args.ray_ship_models,
            metrics_unsigned=args.metrics_unsigned,
            autoscaling_time_scale=args.autoscaling_time_scale,
        )
    except SettingsError as exc:
        print(f"streamhost gateway: {exc}", file=sys.stderr)
        return 2
    if settings.provisioner == "ray":
        from streamhost.gateway.ray_launcher import RayUnavailable, connect, namespace_for

        try:  # here, so that an unreachable cluster is one line and a non-zero exit
            connect(settings.ray_address or "auto", namespace_for(settings.state_url))
        except RayUnavailable as exc:
            print(f"streamhost gateway: {exc}", file=sys.stderr)
            return 1
    if not _uvicorn_fits("gateway"):
        return 1
    from streamhost.gateway.state_lock import Holder, StateInUse, StateLock, StateLockError

    # Taken before the port, so that a second gateway on one state names the first.
    holder = Holder(pid=os.getpid(), url=settings.url, up_pid=args.up_pid, ui_url=args.ui_url)
    try:
        state_lock = StateLock.acquire(settings.state_url, settings.state_dir, holder)
    except (StateInUse, StateLockError) as exc:
        print(f"streamhost gateway: {exc}", file=sys.stderr)
        return 1
    # Bound here rather than by the servers so that a taken port is one clear line.
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sockets = []
    for port in (settings.port, settings.http2_port):
        if port is None:
            continue
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sockets.append(sock)
        try:
            sock.bind((settings.host, port))
        except OSError as exc:
            for taken in sockets:
                taken.close()
            state_lock.release()
            print(
                f"streamhost gateway: cannot listen on {settings.host}:{port}: "
                f"{exc.strerror or exc}",
                file=sys.stderr,
            )
            return 1
    sock, http2_sock = sockets[0], (sockets[1] if len(sockets) > 1 else None)
    if settings.port == 0:
        settings = dataclasses.replace(settings, port=sock.getsockname()[1])
        state_lock.record(dataclasses.replace(holder, url=settings.url))
    if http2_sock is not None and settings.http2_port == 0:
        settings = dataclasses.replace(settings, http2_port=http2_sock.getsockname()[1])
    from streamhost.gateway.app import serve

    if not settings.auth_enabled:
        logging.getLogger("streamhost").warning(
            "authentication is OFF: any client that reaches %s can use the gateway", settings.url
        )
    logging.getLogger("streamhost").info(
        "streamhost gateway on %s (state %s, instance logs in %s)",
        settings.url,
        settings.state_url,
        settings.state_dir / "logs",
    )
    if http2_sock is not None:
        logging.getLogger("streamhost").info(
            "HTTP/2 (bidirectional streams) on %s", settings.http2_url
        )
    else:
        logging.getLogger("streamhost").info(
            "HTTP/2 listener off: it needs --tls-cert and --tls-key (AWS's bidirectional-"
            "streaming client speaks HTTP/2 over TLS only)"
        )
    serve(settings, sock, log_level=args.log_level, state_lock=state_lock, http2_sock=http2_sock)
    return 0


def _logs(args: argparse.Namespace) -> int:
    from pathlib import Path

    from streamhost.gateway.provisioner import read_instance_logs
    from streamhost.gateway.settings import SettingsError, state_dir_for

    try:
        _, folder = state_dir_for(args.state, os.environ)
    except SettingsError as exc:
        print(f"streamhost logs: {exc}", file=sys.stderr)
        return 2
    if args.state_dir:
        folder = Path(args.state_dir).expanduser()
    logs = read_instance_logs(folder, args.endpoint, tail=args.tail)
    if args.instance:
        logs = [(name, text) for name, text in logs if name == args.instance]
    if not logs:
        print(
            f"streamhost logs: no instance logs for endpoint {args.endpoint!r} in "
            f"{folder / 'logs'}",
            file=sys.stderr,
        )
        return 1
    for index, (name, text) in enumerate(logs):
        if len(logs) > 1:
            print(("\n" if index else "") + f"==> instance {name} <==")
        sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")
    return 0


def _models(args: argparse.Namespace) -> int:
    if args.action == "path":
        from streamhost.engine.tiny import built_in_names, built_in_path

        if args.name not in built_in_names():
            known = ", ".join(built_in_names())
            print(
                f"streamhost models path: the built-in models are {known}; got {args.name!r}",
                file=sys.stderr,
            )
            return 2
        print(built_in_path(args.name))
        return 0
    return 2


# The commands defined in this module; the others' modules import boto3's side of the CLI.
_OWN_COMMANDS = ("serve-model", "serve", "gateway", "logs", "models")


def _command_of(argv: list[str]) -> str | None:
    """The subcommand ``argv`` names, if any (after the global ``--log-level LEVEL``)."""
    words = iter(argv)
    for word in words:
        if word == "--log-level":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser of every subcommand, or only of those this module defines (and
    ``up``) when ``command`` is one of them: the gateway, each model server and ``up`` start
    through here, and importing the other commands' modules (boto3's side of the CLI) would
    add ~0.4 s to each start."""
    parser = argparse.ArgumentParser(
        prog="streamhost",
        description="Self-hosted LLM endpoints with response streaming.",
        epilog="Example: streamhost serve-model --model tiny --port 8080",
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_serve_model, _add_gateway, _add_logs, _add_models):
        add(sub)
    if command in _OWN_COMMANDS:
        return parser
    from streamhost.up import add_up_command

    add_up_command(sub)
    if command == "up":
        return parser
    from streamhost.bench.command import add_bench_command
    from streamhost.console import add_commands

    add_commands(sub)
    add_bench_command(sub)
    return parser


def _add_serve_model(sub: Any) -> None:
    serve = sub.add_parser(
        "serve-model",
        aliases=["serve"],
        help="run one model server (a drop-in TGI / LMI container with OpenAI routes)",
        description=(
            "Run one model server honouring the SageMaker container contract (GET /ping, "
            "POST /invocations) with the TGI or LMI API and OpenAI routes. Configuration as "
            "the real containers: TGI environment variables (HF_MODEL_ID, MAX_TOTAL_TOKENS, "
            "...) or serving.properties in the model folder."
        ),
        epilog="Example: HF_MODEL_ID=tiny streamhost serve-model --port 8080",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument(
        "--model",
        help="model id: tiny, tiny-chat, random-1b, synthetic:DELAY_MS, a folder or a hub id "
        "(overrides HF_MODEL_ID)",
    )
    serve.add_argument("--model-dir", default=None, help="model folder (default /opt/ml/model)")
    serve.add_argument(
        "--api",
        default="auto",
        choices=["auto", "tgi", "lmi", "vllm"],
        help="API personality (auto: lmi when serving.properties exists, else tgi; vllm: "
        "AWS's vLLM container, SM_VLLM_* settings and OpenAI bodies on /invocations)",
    )
    serve.add_argument(
        "--engine",
        default=None,
        choices=["auto", "builtin", "vllm"],
        help="what generates: builtin (ours, PyTorch), vllm (vLLM's engine, installed beside "
        "streamhost) or auto (vllm when it is installed and a CUDA device is present). "
        "Default: LMI's option.rolling_batch (vllm asks for vLLM), else auto",
    )
    serve.add_argument(
        "--port", type=int, default=None, help="port (default SAGEMAKER_BIND_TO_PORT or 8080)"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument(
        "--request-timeout",
        type=float,
        default=60.0,
        help="longest a client may take to send a whole request, headers and body; a "
        "slower one is answered 408 (default 60)",
    )
    serve.set_defaults(func=_serve_model)


def _add_gateway(sub: Any) -> None:
    gateway = sub.add_parser(
        "gateway",
        help="run the hosting gateway (SageMaker control plane + runtime) alone",
        description=(
            "Run the SageMaker-compatible hosting gateway: the control plane (CreateModel, "
            "CreateEndpointConfig, CreateEndpoint, ...) and the runtime (InvokeEndpoint, "
            "InvokeEndpointWithResponseStream), starting one model-server process per "
            "instance. Requests must be SigV4-signed with the credentials from --credentials, "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or ~/.config/streamhost/credentials; "
            "without any, only a loopback address may be served."
        ),
        epilog=(
            "Example:\n"
            "  streamhost gateway --port 8080 --state ~/streamhost/gateway.db\n"
            "  AWS_ENDPOINT_URL_SAGEMAKER=http://127.0.0.1:8080 \\\n"
            "  AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=http://127.0.0.1:8080 python deploy.py"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gateway.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    gateway.add_argument(
        "--provisioner",
        default="local",
        choices=["local", "ray"],
        help="where instances run: local processes (default), or actors on a Ray cluster",
    )
    gateway.add_argument(
        "--ray-address",
        default=None,
        help="the Ray cluster to join with --provisioner ray: auto (this machine's, the "
        "default), a head's host:port, or ray://host:port",
    )
    gateway.add_argument(
        "--ray-resource-scale",
        type=float,
        default=1.0,
        help="scale each instance's CPU and memory request (from its InstanceType) by this "
        "factor, for clusters smaller than the types asked for (default 1)",
    )
    gateway.add_argument(
        "--ray-placement-timeout",
        type=float,
        default=180.0,
        help="seconds an instance may wait for room on the Ray cluster before its endpoint "
        "fails for lack of capacity (default 180)",
    )
    gateway.add_argument(
        "--ray-ship-models",
        action="store_true",
        help="send each instance its model files through Ray's object store (default: only "
        "to nodes that cannot see the gateway's state folder; the others read it by path)",
    )
    gateway.add_argument(
        "--autoscaling-time-scale",
        type=float,
        default=1.0,
        metavar="F",
        help="multiply the autoscaler's metric periods (60 s, 10 s), its 15-minute scale-in "
        "window and the policies' cooldowns by F, e.g. 0.02 to watch scaling in seconds in a "
        "demo (default 1: Application Auto Scaling's timing)",
    )
    gateway.add_argument(
        "--metrics-unsigned",
        action="store_true",
        help="serve GET /metrics (Prometheus) without a SigV4 signature on a network address "
        "too (on a loopback address it never needs one)",
    )
    gateway.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    gateway.add_argument(
        "--state",
        default=None,
        help="SQLite file or SQLAlchemy URL of the state store "
        "(default ~/.local/state/streamhost/gateway.db)",
    )
    gateway.add_argument(
        "--state-dir",
        default=None,
        help="folder for instance logs and model data (default: the state file's folder)",
    )
    gateway.add_argument(
        "--credentials", default=None, help="AWS shared-credentials file of accepted key pairs"
    )
    gateway.add_argument("--region", default="us-east-1", help="region in ARNs (us-east-1)")
    gateway.add_argument("--account", default="123456789012", help="account id in ARNs")
    gateway.add_argument("--tls-cert", default=None, help="serve HTTPS with this certificate")
    gateway.add_argument("--tls-key", default=None, help="private key of --tls-cert")
    gateway.add_argument(
        "--http2-port",
        type=int,
        default=8443,
        help="with --tls-cert: serve HTTP/2 over TLS here too, for AWS's bidirectional-"
        "streaming client (InvokeEndpointWithBidirectionalStream); 0: any free port (8443)",
    )
    gateway.add_argument(
        "--no-auth", action="store_true", help="accept unsigned requests (loopback only)"
    )
    gateway.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback address without authentication",
    )
    _add_gateway_timeouts(gateway)
    gateway.add_argument(
        "--keep-instances",
        action="store_true",
        help="leave model instances running at exit; the next gateway adopts them",
    )
    gateway.add_argument(
        "--first-endpoint",
        metavar="NAME",
        default=None,
        help="at start, bring endpoint NAME back before the others (they start once it "
        "is InService or failed, so as not to compete with it for the machine)",
    )
    # Set by `streamhost up` for the state lock's record, so a second `up` can name it.
    gateway.add_argument("--up-pid", type=int, default=None, help=argparse.SUPPRESS)
    gateway.add_argument("--ui-url", default=None, help=argparse.SUPPRESS)
    gateway.set_defaults(func=_gateway)


def _add_gateway_timeouts(gateway: argparse.ArgumentParser) -> None:
    gateway.add_argument(
        "--stream-timeout",
        type=float,
        default=600.0,
        help="longest response stream in seconds (default 600)",
    )
    gateway.add_argument(
        "--idle-timeout",
        type=float,
        default=60.0,
        help="longest silence from a model, before or within its answer (default 60)",
    )
    gateway.add_argument(
        "--request-timeout",
        type=float,
        default=60.0,
        help="longest a client may take to send a whole request, headers and body; a "
        "slower one is answered 408 RequestTimeoutException (default 60)",
    )


def _add_logs(sub: Any) -> None:
    logs = sub.add_parser(
        "logs",
        help="print an endpoint's instance logs (no gateway needed)",
        description="Print the logs (stdout and stderr) of every instance an endpoint has had.",
        epilog="Example: streamhost logs my-endpoint --tail 50",
    )
    logs.add_argument("endpoint", help="endpoint name")
    logs.add_argument("--state", default=None, help="the gateway's --state (to find its logs)")
    logs.add_argument("--state-dir", default=None, help="the gateway's --state-dir")
    logs.add_argument("--instance", default=None, help="only this instance's log")
    logs.add_argument("--tail", type=int, default=None, help="only the last N lines of each log")
    logs.set_defaults(func=_logs)


def _add_models(sub: Any) -> None:
    models = sub.add_parser(
        "models",
        help="built-in models",
        description="Built-in models.",
        epilog="Example: streamhost models path tiny",
    )
    models.add_argument(
        "action", choices=["path"], help="path: build if needed and print the model's folder"
    )
    models.add_argument("name", help="built-in model name: tiny, tiny-chat or random-1b")
    models.set_defaults(func=_models)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``streamhost`` command."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(_command_of(argv)).parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.func(args)
    except KeyboardInterrupt:  # Ctrl-C before the command handles it (a server still starting)
        print(f"streamhost {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
