"""Engine limit benchmark: raw batched decode vs the engine, on the tiny model.

Run: python benchmarks/engine.py [--repeats 3] [--model tiny] [--prompt-len 32] [--new 64]
Prints a Markdown table: raw = the transformers model with its DynamicCache (the limit the
issue names); runner = the engine's own forward + cache + token choice without the scheduler;
engine = requests through Engine.submit. Ratios are engine / raw and engine / runner.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time


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
    from streamhost.engine.runner import make_runner
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    from streamhost.engine import Engine, EngineConfig

    batches = [int(b) for b in args.batches.split(",")]
    engine = Engine.load(
        EngineConfig(model=args.model, dtype=args.dtype, max_batch_size=max(batches))
    )
    model, device = engine.model.model, engine.model.device
    print(
        f"model {args.model} on {device} ({engine.model.dtype}); prompt {args.prompt_len}, "
        f"{args.new} new tokens, median of {args.repeats}",
        file=sys.stderr,
    )
    rows = []
    for b in batches:
        raw_decode(model, device, b, args.prompt_len, 8)  # warm-up
        asyncio.run(engine_throughput(engine, b, args.prompt_len, 8))
        raws, runs, engs = [], [], []
        for _ in range(args.repeats):
            raws.append(raw_decode(model, device, b, args.prompt_len, args.new))
            runs.append(runner_decode(engine, b, args.prompt_len, args.new))
            engs.append(asyncio.run(engine_throughput(engine, b, args.prompt_len, args.new)))
        raw, run, eng = statistics.median(raws), statistics.median(runs), statistics.median(engs)
        rows.append((b, raw, run, eng))
        print(
            f"batch {b}: raw {raw:.0f} tok/s, runner {run:.0f}, engine {eng:.0f} "
            f"({eng / raw:.1%} of raw, {eng / run:.1%} of runner)",
            file=sys.stderr,
        )
    engine.shutdown()
    print(
        "| concurrency | raw transformers decode tok/s | engine runner, no scheduler tok/s "
        "| engine tok/s | engine / raw | engine / runner |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for b, raw, run, eng in rows:
        print(f"| {b} | {raw:.0f} | {run:.0f} | {eng:.0f} | {eng / raw:.1%} | {eng / run:.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
