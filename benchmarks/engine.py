"""Engine limit benchmark: raw batched decode vs the engine, on the tiny model.

Run: python benchmarks/engine.py [--repeats 3] [--model tiny] [--prompt-len 32] [--new 64]
Prints a Markdown table; the ratio column is engine / raw at the same batch size.
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
        raws, engs = [], []
        for _ in range(args.repeats):
            raws.append(raw_decode(model, device, b, args.prompt_len, args.new))
            engs.append(asyncio.run(engine_throughput(engine, b, args.prompt_len, args.new)))
        raw, eng = statistics.median(raws), statistics.median(engs)
        rows.append((b, raw, eng, eng / raw))
        print(
            f"batch {b}: raw {raw:.0f} tok/s, engine {eng:.0f} tok/s ({eng / raw:.1%})",
            file=sys.stderr,
        )
    engine.shutdown()
    print("| concurrency | raw decode tok/s | engine tok/s | engine / raw |")
    print("|---:|---:|---:|---:|")
    for b, raw, eng, ratio in rows:
        print(f"| {b} | {raw:.0f} | {eng:.0f} | {ratio:.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
