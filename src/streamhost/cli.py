"""The ``streamhost`` command."""

from __future__ import annotations

import argparse
import logging
import sys


def _serve_model(args: argparse.Namespace) -> int:
    from streamhost.server.config import ConfigError, build_config

    try:
        config = build_config(
            model_dir=args.model_dir, model=args.model, api=args.api, port=args.port, host=args.host
        )
    except ConfigError as exc:
        print(f"streamhost serve-model: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    from streamhost.server.app import create_app

    app = create_app(config)
    logging.getLogger("streamhost").info(
        "serving %s (%s API) on http://%s:%d",
        config.model_id or "custom handler",
        config.api,
        config.host,
        config.port,
    )
    uvicorn.run(
        app,
        host=config.host,
        port=config.port,
        log_level=args.log_level,
        timeout_graceful_shutdown=int(config.graceful_timeout),
        access_log=False,
    )
    return 0


def _models(args: argparse.Namespace) -> int:
    if args.action == "path":
        if args.name != "tiny":
            print(
                f"streamhost models path: only the built-in 'tiny' is known; got {args.name!r}",
                file=sys.stderr,
            )
            return 2
        from streamhost.engine.tiny import tiny_path

        print(tiny_path())
        return 0
    return 2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="streamhost",
        description="Self-hosted LLM endpoints with response streaming.",
        epilog="Example: streamhost serve-model --model tiny --port 8080",
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    sub = parser.add_subparsers(dest="command", required=True)

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
        help="model id: tiny, synthetic:DELAY_MS, a folder or a hub id (overrides HF_MODEL_ID)",
    )
    serve.add_argument("--model-dir", default=None, help="model folder (default /opt/ml/model)")
    serve.add_argument(
        "--api",
        default="auto",
        choices=["auto", "tgi", "lmi"],
        help="API personality (auto: lmi when serving.properties exists)",
    )
    serve.add_argument(
        "--port", type=int, default=None, help="port (default SAGEMAKER_BIND_TO_PORT or 8080)"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.set_defaults(func=_serve_model)

    models = sub.add_parser(
        "models",
        help="built-in models",
        description="Built-in models.",
        epilog="Example: streamhost models path tiny",
    )
    models.add_argument(
        "action", choices=["path"], help="path: build if needed and print the model's folder"
    )
    models.add_argument("name", help="model name (tiny)")
    models.set_defaults(func=_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``streamhost`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
