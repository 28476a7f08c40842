"""Model-server benchmark: streamhost's OpenAI route vs `transformers serve --continuous-batching`.

Both serve the same built-in `tiny` folder on loopback and get the same closed-loop load:
fixed-length random prompts, greedy decoding, N new tokens (EOS ignored where the server
supports it; token counts come from `usage`). Servers are measured alternately, several
times; the table reports medians and streamhost / peer ratios.

Run: python benchmarks/server.py [--concurrency 32] [--new 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready after {timeout} s")


def start(cmd: list[str], ready_url: str, log: str) -> subprocess.Popen:
    with open(log, "w") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_ready(ready_url, proc)
    except Exception:
        stop(proc)
        raise
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--new", type=int, default=64, help="new tokens per request")
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--requests-per-run", type=int, default=0, help="default: 3 x concurrency")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-peer", action="store_true", help="measure streamhost only")
    args = parser.parse_args(argv)

    from transformers import AutoTokenizer

    from streamhost.bench.loadgen import Workload, random_prompts, run
    from streamhost.bench.metrics import summarize
    from streamhost.engine.tiny import tiny_path

    folder = str(tiny_path())
    tok = AutoTokenizer.from_pretrained(folder)
    prompts = random_prompts(lambda ids: tok.decode(ids), len(tok), args.prompt_len, 256)
    n = args.requests_per_run or 3 * args.concurrency
    servers = {}
    procs = []
    try:
        port = free_port()
        procs.append(
            start(
                [
                    sys.executable,
                    "-m",
                    "streamhost.cli",
                    "serve-model",
                    "--model",
                    folder,
                    "--port",
                    str(port),
                ],
                f"http://127.0.0.1:{port}/ping",
                "/tmp/streamhost-bench-ours.log",
            )
        )
        servers["streamhost"] = Workload(
            f"http://127.0.0.1:{port}", prompts, args.new, model="tiny", ignore_eos=True
        )
        if not args.no_peer:
            exe = shutil.which("transformers") or os.path.join(
                os.path.dirname(sys.executable), "transformers"
            )
            port = free_port()
            procs.append(
                start(
                    [
                        exe,
                        "serve",
                        "--continuous-batching",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        folder,
                    ],
                    f"http://127.0.0.1:{port}/v1/models",
                    "/tmp/streamhost-bench-peer.log",
                )
            )
            # `transformers serve` rejects unknown fields such as ignore_eos.
            servers["transformers serve CB"] = Workload(
                f"http://127.0.0.1:{port}", prompts, args.new, model=folder, ignore_eos=False
            )
        for workload in servers.values():
            asyncio.run(
                run(workload, max(4, args.concurrency // 4), min(args.concurrency, 8))
            )  # warm-up
        runs: dict[str, list] = {name: [] for name in servers}
        for rep in range(args.repeats):
            for name, workload in servers.items():
                results, duration = asyncio.run(run(workload, n, args.concurrency, seed=rep))
                summary = summarize(results, duration)
                runs[name].append(summary)
                print(
                    f"[{rep + 1}/{args.repeats}] {name}: {summary.output_throughput:.0f} tok/s, "
                    f"TTFT p50 {summary.ttft['p50']:.1f} ms p99 {summary.ttft['p99']:.1f} ms, "
                    f"ITL p50 {summary.itl['p50']:.2f} ms, failed {summary.failed}",
                    file=sys.stderr,
                )
    finally:
        for proc in procs:
            stop(proc)

    def med(name: str, get) -> float:
        return statistics.median(get(s) for s in runs[name])

    rows = [
        ("output tok/s", lambda s: s.output_throughput),
        ("request/s", lambda s: s.request_throughput),
        ("TTFT p50 (ms)", lambda s: s.ttft["p50"]),
        ("TTFT p99 (ms)", lambda s: s.ttft["p99"]),
        ("TPOT p50 (ms)", lambda s: s.tpot["p50"]),
        ("ITL p50 (ms)", lambda s: s.itl["p50"]),
        ("ITL p99 (ms)", lambda s: s.itl["p99"]),
        ("E2E p50 (ms)", lambda s: s.e2e["p50"]),
        ("failed requests", lambda s: s.failed),
    ]
    names = list(servers)
    print(
        f"\n{args.concurrency} concurrent x {args.new} new tokens, prompt {args.prompt_len} tokens, "
        f"{n} requests per run, median of {args.repeats} runs\n"
    )
    header = (
        "| metric | " + " | ".join(names) + (" | streamhost / peer |" if len(names) > 1 else " |")
    )
    print(header)
    print("|---" * (len(names) + 1 + (len(names) > 1)) + "|")
    for label, get in rows:
        values = [med(name, get) for name in names]
        cells = " | ".join(f"{v:.1f}" for v in values)
        ratio = (
            f" | {values[0] / values[1]:.2f}x |"
            if len(values) > 1 and values[1]
            else (" | - |" if len(values) > 1 else " |")
        )
        print(f"| {label} | {cells}{ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
