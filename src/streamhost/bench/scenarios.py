"""The benchmark scenarios; each returns a :class:`Table` of medians over repeated runs.

1. ``engine``: the raw transformers decode loop vs the engine's runner vs requests through
   the engine, in process (the engine's limit).
2. ``server``: streamhost's OpenAI route vs ``transformers serve --continuous-batching`` on
   the same model folder (``tiny`` by default), closed-loop concurrency sweep (or Poisson
   arrivals).

The gateway and end-to-end scenarios live in :mod:`streamhost.bench.relay`.
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil

from streamhost.bench.loadgen import Workload, random_prompts, run
from streamhost.bench.metrics import Summary, summarize
from streamhost.ports import free_port
from streamhost.processes import own_group, signal_group, stop_process

Progress = Callable[[str], None]


@dataclass
class Table:
    """A result table: a title, column names, rows, notes; ``series`` feeds the plots."""

    name: str
    title: str
    columns: list[str]
    rows: list[list] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    series: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def markdown(self) -> str:
        """The table as Markdown."""
        lines = [f"### {self.title}", "", "| " + " | ".join(self.columns) + " |"]
        lines.append("|" + "---|" * len(self.columns))
        for row in self.rows:
            lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
        lines += [""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


# -- 1. engine limit ---------------------------------------------------------------------------


def raw_decode(model, device, batch: int, prompt_len: int, new_tokens: int) -> float:
    """Tokens/s of the bare model: one prefill, then greedy decode steps with a KV cache."""
    import torch
    from transformers import DynamicCache

    from streamhost.engine.runner import TorchRunner

    cache_arg = TorchRunner(model, device)._cache_arg
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 500, (batch, prompt_len), generator=gen).to(device)
    with torch.inference_mode():
        cache = DynamicCache(config=model.config)
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1, **{cache_arg: cache})
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(new_tokens):
            out = model(input_ids=nxt, use_cache=True, **{cache_arg: cache})
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            nxt.tolist()  # the engine needs the ids on the host every step
        elapsed = time.perf_counter() - start
    return batch * new_tokens / elapsed


def runner_decode(engine, batch: int, prompt_len: int, new_tokens: int) -> float:
    """Tokens/s of the engine's own runner (lean forward, cache, token choice), no scheduler."""
    import random

    from streamhost.engine import SamplingParams
    from streamhost.engine.loader import make_runner
    from streamhost.engine.sampling import RowSampler

    class Row:
        def __init__(self, ids: list[int]) -> None:
            self.prompt_ids = ids
            self.output_ids: list[int] = []
            self.sampler = RowSampler(SamplingParams())

    rng = random.Random(batch)
    rows = [Row([rng.randrange(10, 500) for _ in range(prompt_len)]) for _ in range(batch)]
    runner = make_runner(engine.model.model, engine.model.device, engine.config.fast_path)
    for row, sample in zip(rows, runner.add(rows), strict=True):
        row.output_ids.append(sample.token_id)
    start = time.perf_counter()
    for _ in range(new_tokens):
        for row, sample in zip(rows, runner.step(), strict=True):
            row.output_ids.append(sample.token_id)
    return batch * new_tokens / (time.perf_counter() - start)


async def engine_throughput(engine, concurrency: int, prompt_len: int, new_tokens: int) -> float:
    """Output tokens/s of ``concurrency`` simultaneous requests through the engine."""
    import random

    from streamhost.engine import SamplingParams

    rng = random.Random(concurrency)
    prompts = [[rng.randrange(10, 500) for _ in range(prompt_len)] for _ in range(concurrency)]

    async def one(p):
        n = 0
        stream = engine.submit(p, SamplingParams(max_new_tokens=new_tokens, ignore_eos=True))
        async for _ in stream:
            n += 1
        return n

    start = time.perf_counter()
    counts = await asyncio.gather(*[one(p) for p in prompts])
    return sum(counts) / (time.perf_counter() - start)


def engine_limit(
    model: str = "tiny",
    batches: tuple[int, ...] = (1, 8, 32),
    prompt_len: int = 32,
    new_tokens: int = 64,
    repeats: int = 3,
    progress: Progress | None = None,
) -> Table:
    """Scenario 1: raw decode vs runner vs engine at each batch size."""
    import torch
    from transformers import AutoModelForCausalLM

    from streamhost.engine import Engine, EngineConfig

    engine = Engine.load(EngineConfig(model=model, max_batch_size=max(batches)))
    device = engine.model.device
    # The peer: transformers' own model of the same checkpoint, dtype and device (the
    # engine's own weights may be read without transformers, engine/llama.py).
    dtype = getattr(torch, engine.model.dtype)
    mdl = AutoModelForCausalLM.from_pretrained(engine.model.path, dtype=dtype).to(device).eval()
    table = Table(
        "engine",
        f"Engine limit ({model} on {device}, {engine.model.dtype}; prompt {prompt_len}, "
        f"{new_tokens} new tokens; median of {repeats})",
        [
            "concurrency",
            "raw transformers tok/s",
            "runner tok/s",
            "engine tok/s",
            "engine / raw",
            "engine / runner",
        ],
    )
    try:
        for b in batches:
            raw_decode(mdl, device, b, prompt_len, 4)  # warm-up
            asyncio.run(engine_throughput(engine, b, prompt_len, 4))
            raws, runs, engs = [], [], []
            for rep in range(repeats):
                raws.append(raw_decode(mdl, device, b, prompt_len, new_tokens))
                runs.append(runner_decode(engine, b, prompt_len, new_tokens))
                engs.append(asyncio.run(engine_throughput(engine, b, prompt_len, new_tokens)))
                if progress:
                    progress(f"engine batch {b}: run {rep + 1}/{repeats}")
            raw, rn, eng = statistics.median(raws), statistics.median(runs), statistics.median(engs)
            table.rows.append([b, raw, rn, eng, f"{eng / raw:.1%}", f"{eng / rn:.1%}"])
            for label, value in (("raw transformers", raw), ("runner", rn), ("engine", eng)):
                table.series.setdefault("throughput", {}).setdefault(label, []).append(value)
        table.series["x"] = {"concurrency": [float(b) for b in batches]}
    finally:
        engine.shutdown()
    return table


# -- 2. model server ---------------------------------------------------------------------------


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


# vLLM on a CPU: a small KV cache (it takes 92 % of the memory otherwise).
VLLM_BENCH_ENV = {"VLLM_CPU_KVCACHE_SPACE": "2"}


def start(
    cmd: list[str],
    ready_url: str,
    log: str,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.Popen:
    with open(log, "w") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            **own_group(),
        )
    try:
        wait_ready(ready_url, proc, timeout)
    except Exception:
        stop(proc)
        raise
    return proc


def stop(proc: subprocess.Popen) -> None:
    """TERM → wait 20 s → KILL to the peer's process group."""
    stop_process(lambda: proc.poll() is None, lambda signum: signal_group(proc.pid, signum), 20)
    proc.wait()


@dataclass
class ServerRuns:
    """Summaries per server name and concurrency, and the CPU seconds each server's HTTP
    process spent per run (its engine's processes excluded: the front's own cost)."""

    runs: dict[str, dict[int, list[Summary]]] = field(default_factory=dict)
    front_cpu: dict[str, dict[int, list[float]]] = field(default_factory=dict)

    def median(self, name: str, concurrency: int, get: Callable[[Summary], float]) -> float:
        return statistics.median(get(s) for s in self.runs[name][concurrency])


def model_server(
    concurrencies: tuple[int, ...] = (32,),
    new_tokens: int = 64,
    prompt_len: int = 32,
    repeats: int = 3,
    requests_per_run: int = 0,
    peer: bool = True,
    rate: float | None = None,
    progress: Progress | None = None,
    model: str = "tiny",
    vllm_python: str | None = None,
) -> Table:
    """Scenario 2: streamhost vs ``transformers serve --continuous-batching`` on ``model``
    (both on their default device: the GPU when there is one).

    With ``vllm_python`` (a Python that has vLLM and streamhost) two more servers run in
    the same interleaved rounds: streamhost on ``--engine vllm`` and vLLM's own OpenAI
    server, both in float32 on ``model``; every server is then measured on OpenAI
    completions (vLLM's server has no chat template for a model without one).
    """
    from transformers import AutoTokenizer

    from streamhost.engine.loader import resolve_model_path

    folder = str(resolve_model_path(model, None, False))
    tok = AutoTokenizer.from_pretrained(folder)
    prompts = random_prompts(lambda ids: tok.decode(ids), len(tok), prompt_len, 256)
    servers: dict[str, Workload] = {}
    processes: dict[str, subprocess.Popen] = {}  # by server name, as `servers`
    results = ServerRuns()
    try:
        port = free_port()
        processes["streamhost"] = start(
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
            os.path.join(_log_dir(), "bench-streamhost.log"),
        )
        api = "openai-completions" if vllm_python else "openai-chat"
        servers["streamhost"] = Workload(
            f"http://127.0.0.1:{port}", prompts, new_tokens, api=api, model=model
        )
        if vllm_python:
            _start_vllm_peers(vllm_python, folder, model, prompts, new_tokens, servers, processes)
        if peer:
            exe = shutil.which("transformers") or os.path.join(
                os.path.dirname(sys.executable), "transformers"
            )
            port = free_port()
            processes["transformers serve CB"] = start(
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
                os.path.join(_log_dir(), "bench-transformers-serve.log"),
            )
            # `transformers serve` rejects unknown fields such as ignore_eos.
            servers["transformers serve CB"] = Workload(
                f"http://127.0.0.1:{port}", prompts, new_tokens, model=folder, ignore_eos=False
            )
        for workload in servers.values():
            asyncio.run(run(workload, 8, min(8, max(concurrencies))))  # warm-up
        for c in concurrencies:
            n = requests_per_run or 3 * c
            for rep in range(repeats):
                for name, workload in servers.items():
                    front = psutil.Process(processes[name].pid)
                    cpu_before = sum(front.cpu_times()[:2])
                    res, duration = asyncio.run(run(workload, n, c, rate=rate, seed=rep))
                    results.front_cpu.setdefault(name, {}).setdefault(c, []).append(
                        sum(front.cpu_times()[:2]) - cpu_before
                    )
                    if processes[name].poll() is not None:  # died during the run (out of memory?)
                        raise RuntimeError(
                            f"{name} exited with {processes[name].returncode} during the run at "
                            f"concurrency {c}; its log is in {_log_dir()}"
                        )
                    results.runs.setdefault(name, {}).setdefault(c, []).append(
                        summarize(res, duration)
                    )
                    if progress:
                        progress(f"server c={c} {name}: run {rep + 1}/{repeats}")
    finally:
        for proc in processes.values():
            stop(proc)
    names = list(servers)
    load = f"Poisson {rate}/s" if rate else "closed loop"
    table = Table(
        "server",
        f"Model server ({model}; {load}, {new_tokens} new tokens, prompt {prompt_len} tokens, "
        f"median of {repeats})",
        [
            "concurrency",
            "server",
            "output tok/s",
            "TTFT p50 ms",
            "TTFT p99 ms",
            "TPOT p50 ms",
            "ITL p50 ms",
            "ITL p99 ms",
            "E2E p50 ms",
            "failed",
            "front CPU ms/req",
            "front CPU µs/token",
        ],
    )
    metrics = {
        "output tok/s": lambda s: s.output_throughput,
        "TTFT p50": lambda s: s.ttft["p50"],
        "TTFT p99": lambda s: s.ttft["p99"],
        "ITL p50": lambda s: s.itl["p50"],
    }
    for c in concurrencies:
        n_requests = requests_per_run or 3 * c
        for name in names:
            m = functools.partial(results.median, name, c)
            table.rows.append(
                [
                    c,
                    name,
                    m(lambda s: s.output_throughput),
                    m(lambda s: s.ttft["p50"]),
                    m(lambda s: s.ttft["p99"]),
                    m(lambda s: s.tpot["p50"]),
                    m(lambda s: s.itl["p50"]),
                    m(lambda s: s.itl["p99"]),
                    m(lambda s: s.e2e["p50"]),
                    m(lambda s: s.failed),
                    statistics.median(results.front_cpu[name][c]) * 1000 / n_requests,
                    statistics.median(results.front_cpu[name][c]) * 1e6 / n_requests / new_tokens,
                ]
            )
            for label, get in metrics.items():
                table.series.setdefault(label, {}).setdefault(name, []).append(m(get))
        if "vLLM" in names:
            table.notes.append(_vllm_note(results, c))
        if len(names) == 2:
            ours = results.median(names[0], c, lambda s: s.output_throughput)
            theirs = results.median(names[1], c, lambda s: s.output_throughput)
            t_ours = results.median(names[0], c, lambda s: s.ttft["p50"])
            t_theirs = results.median(names[1], c, lambda s: s.ttft["p50"])
            if theirs and t_theirs:
                table.notes.append(
                    f"concurrency {c}: streamhost / peer output tok/s = {ours / theirs:.2f}x; "
                    f"TTFT p50 ratio {t_ours / t_theirs:.2f}x"
                )
            else:
                table.notes.append(f"concurrency {c}: the peer produced no tokens (see failed)")
    table.series["x"] = {"concurrency": [float(c) for c in concurrencies]}
    return table


def _start_vllm_peers(
    python: str,
    folder: str,
    model: str,
    prompts: list[str],
    new_tokens: int,
    servers: dict[str, Workload],
    processes: dict[str, subprocess.Popen],
) -> None:
    """streamhost on vLLM's engine and vLLM's own server, on the same folder in float32."""
    port = free_port()
    processes["streamhost (vllm)"] = start(
        [
            *[python, "-m", "streamhost.cli", "serve-model", "--engine", "vllm"],
            *["--model", folder, "--port", str(port)],
        ],
        f"http://127.0.0.1:{port}/ping",
        os.path.join(_log_dir(), "bench-streamhost-vllm.log"),
        env=VLLM_BENCH_ENV,
        timeout=900,
    )
    servers["streamhost (vllm)"] = Workload(
        f"http://127.0.0.1:{port}", prompts, new_tokens, api="openai-completions", model=model
    )
    port = free_port()
    processes["vLLM"] = start(
        [
            *[python, "-m", "vllm.entrypoints.openai.api_server", "--model", folder],
            *["--served-model-name", model, "--dtype", "float32", "--disable-log-stats"],
            *["--host", "127.0.0.1", "--port", str(port)],
        ],
        f"http://127.0.0.1:{port}/v1/models",
        os.path.join(_log_dir(), "bench-vllm.log"),
        env=VLLM_BENCH_ENV,
        timeout=900,
    )
    servers["vLLM"] = Workload(
        f"http://127.0.0.1:{port}", prompts, new_tokens, api="openai-completions", model=model
    )


def _vllm_note(results: ServerRuns, c: int) -> str:
    """streamhost on vLLM against bare vLLM at one concurrency: the issue's targets."""

    def med(name: str, get: Callable[[Summary], float]) -> float:
        return results.median(name, c, get)

    ours, bare = "streamhost (vllm)", "vLLM"
    tps = med(ours, lambda s: s.output_throughput) / max(
        med(bare, lambda s: s.output_throughput), 1e-9
    )
    ttft = med(ours, lambda s: s.ttft["p50"]) - med(bare, lambda s: s.ttft["p50"])
    itl = med(ours, lambda s: s.itl["p50"]) - med(bare, lambda s: s.itl["p50"])
    builtin = med("streamhost", lambda s: s.output_throughput) / max(
        med(bare, lambda s: s.output_throughput), 1e-9
    )
    return (
        f"concurrency {c}: streamhost on vLLM / bare vLLM tok/s = {tps:.1%}; TTFT p50 "
        f"{ttft:+.1f} ms; ITL p50 {itl:+.2f} ms; our engine / vLLM tok/s = {builtin:.2f}x"
    )


def _log_dir() -> str:
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), "streamhost-bench")
    os.makedirs(path, exist_ok=True)
    return path
