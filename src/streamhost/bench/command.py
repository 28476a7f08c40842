"""``streamhost bench``: run the benchmark scenarios and write their reports."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

SCENARIOS = ("engine", "server", "gateway", "e2e")
SMOKE = {"repeats": 1, "new": 4, "concurrency": "1,2", "requests": 4}


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x)


def add_bench_command(subparsers) -> None:
    """Register ``bench`` on the CLI's subparsers."""
    p = subparsers.add_parser(
        "bench",
        help="run the benchmark suite (vLLM-style metrics) and write reports",
        description=(
            "Benchmark scenarios, each comparing peers in one run: engine (raw decode vs "
            "engine), server (streamhost vs transformers serve --continuous-batching), "
            "gateway (direct vs gateway vs nginx on synthetic:5), e2e (boto3 through the "
            "gateway). Reports go to --out as Markdown, JSON and PNG plots."
        ),
        epilog="Example: streamhost bench --scenario server --concurrency 1,8,32 --repeats 3",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--scenario", default="all", help=f"one of {', '.join(SCENARIOS)}, or all (default)"
    )
    p.add_argument(
        "--concurrency", default="1,8,32", help="closed-loop concurrency sweep (default 1,8,32)"
    )
    p.add_argument(
        "--rate",
        type=float,
        default=None,
        help="Poisson arrival rate (req/s) instead of closed loop",
    )
    p.add_argument(
        "--model",
        default="tiny",
        help="model of the engine and server scenarios: tiny (default), random-1b (a random "
        "1B Llama in bfloat16, for a GPU), a folder or a hub id",
    )
    p.add_argument("--new", type=int, default=64, help="new tokens per request (default 64)")
    p.add_argument("--prompt-len", type=int, default=32, help="prompt tokens (default 32)")
    p.add_argument("--repeats", type=int, default=3, help="runs per point; medians are reported")
    p.add_argument(
        "--requests", type=int, default=0, help="requests per run (default 3 x concurrency)"
    )
    p.add_argument("--no-peer", action="store_true", help="skip transformers serve / nginx")
    p.add_argument(
        "--provisioner",
        default="local",
        choices=["local", "ray"],
        help="e2e scenario: ray also measures a gateway whose instance is an actor on a "
        "one-node Ray cluster on this machine (needs streamhost[ray])",
    )
    p.add_argument(
        "--vllm-python",
        default=None,
        metavar="PYTHON",
        help="server scenario: also measure streamhost on --engine vllm and vLLM's own server, "
        "run with this Python (one with vLLM and streamhost installed, such as "
        ".venv-vllm/bin/python after `make test`)",
    )
    p.add_argument(
        "--smoke", action="store_true", help="seconds-long run of every scenario (for CI)"
    )
    p.add_argument(
        "--out", default="benchmarks/results", help="report folder (default benchmarks/results)"
    )
    p.set_defaults(func=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    """Run the chosen scenarios with a progress display; write the reports."""
    from rich.console import Console

    from streamhost.bench import report, scenarios

    if args.smoke:
        args.repeats, args.new = SMOKE["repeats"], SMOKE["new"]
        args.concurrency, args.requests = SMOKE["concurrency"], SMOKE["requests"]
    chosen = SCENARIOS if args.scenario == "all" else tuple(args.scenario.split(","))
    unknown = [s for s in chosen if s not in SCENARIOS]
    if unknown:
        print(
            f"streamhost bench: unknown scenario {unknown[0]!r} (choose from {', '.join(SCENARIOS)})",
            file=sys.stderr,
        )
        return 2
    console = Console(stderr=True)
    tables = []
    concurrency = _ints(args.concurrency)
    with console.status("starting…") as status:

        def progress(message: str) -> None:
            status.update(message)
            console.log(message)

        for name in chosen:
            status.update(f"scenario {name}…")
            if name == "engine":
                tables.append(
                    scenarios.engine_limit(
                        model=args.model,
                        batches=concurrency,
                        prompt_len=args.prompt_len,
                        new_tokens=args.new,
                        repeats=args.repeats,
                        progress=progress,
                    )
                )
            elif name == "server":
                tables.append(
                    scenarios.model_server(
                        concurrency,
                        args.new,
                        args.prompt_len,
                        args.repeats,
                        args.requests,
                        peer=not args.no_peer,
                        rate=args.rate,
                        model=args.model,
                        vllm_python=args.vllm_python,
                        progress=progress,
                    )
                )
            elif name == "gateway":
                from streamhost.bench import relay

                options = relay.RelayOptions(
                    repeats=args.repeats,
                    levels=(1, 2) if args.smoke else (1, 64),
                    tokens=20 if args.smoke else 200,
                    capacity_tokens=50 if args.smoke else 1000,
                    single_rounds=2 if args.smoke else 10,
                    ttfb_streams=3 if args.smoke else 60,
                    steady=(2, 5, 2) if args.smoke else (32, 64, 10),
                    nginx=not args.no_peer,
                )
                tables.append(relay.run_relay(options, progress=progress))
            else:
                from streamhost.bench import relay

                levels = concurrency if args.concurrency != "1,8,32" else (1, 8, 32, 64)
                tables.append(
                    relay.run_e2e(
                        levels,
                        args.new,
                        args.repeats,
                        args.requests,
                        progress=progress,
                        provisioner=args.provisioner,
                    )
                )
    # The command line as typed (benchmarks/*.py call the CLI with their own argv).
    command = (
        "streamhost " + " ".join(sys.argv[1:])
        if sys.argv[0].endswith("streamhost")
        else ("python " + " ".join(sys.argv))
    )
    paths = report.write(tables, Path(args.out), command)
    for table in tables:
        print(table.markdown())
    console.print(f"reports written: {', '.join(str(p) for p in paths)}")
    return 0
