"""Continuous batching gives each request exactly what it would get alone."""

from __future__ import annotations

import asyncio

import pytest

from streamhost.engine import Engine, EngineConfig, FinishReason, SamplingParams

from .conftest import collect, greedy_alone


@pytest.fixture(scope="module", params=["fast", "generic"])
def any_engine(request, engine, tiny_dir):
    """The default engine (Llama fast path) and one on transformers' own forward."""
    if request.param == "fast":
        yield engine
        return
    generic = Engine.load(EngineConfig(model="tiny", max_batch_size=32, fast_path=False))
    yield generic
    generic.shutdown()


def test_tiny_engine_uses_the_llama_fast_path(engine):
    from streamhost.engine.llama import LlamaRunner

    assert isinstance(engine._host._scheduler.runner, LlamaRunner)


async def test_concurrent_greedy_requests_match_generate_alone(any_engine, reference):
    engine = any_engine
    prompts = [" ".join(["streaming tokens"] * (i + 1)) + f" request {i}" for i in range(16)]
    lengths = [5 + 3 * i for i in range(16)]
    streams = [
        engine.submit(p, SamplingParams(max_new_tokens=n, ignore_eos=True))
        for p, n in zip(prompts, lengths, strict=True)
    ]
    results = await asyncio.gather(*[collect(s) for s in streams])
    for stream, events, n in zip(streams, results, lengths, strict=True):
        assert [e.id for e in events] == greedy_alone(reference, stream.prompt_ids, n)
        assert events[-1].finish_reason is FinishReason.LENGTH
        assert events[-1].generated_tokens == n


async def test_seeded_sampling_is_identical_alone_and_in_a_busy_batch(any_engine):
    engine = any_engine
    params = dict(max_new_tokens=24, do_sample=True, temperature=1.5, top_k=50, seed=1234)
    alone = await collect(engine.submit("what is life?", SamplingParams(**params)))
    others = [
        engine.submit(f"noise {i} " * (i + 1), SamplingParams(max_new_tokens=30, do_sample=True))
        for i in range(15)
    ]
    target = engine.submit("what is life?", SamplingParams(**params))
    crowd = await asyncio.gather(collect(target), *[collect(s) for s in others])
    assert [e.id for e in crowd[0]] == [e.id for e in alone]
    assert crowd[0][-1].seed == 1234


async def test_different_seeds_give_different_samples(engine):
    def params(seed):
        return SamplingParams(max_new_tokens=32, do_sample=True, temperature=3.0, seed=seed)

    a = await collect(engine.submit("hello", params(1)))
    b = await collect(engine.submit("hello", params(2)))
    assert [e.id for e in a] != [e.id for e in b]


async def test_cancelling_a_running_request_frees_its_slot_for_a_queued_one(tiny_dir):
    engine = Engine.load(EngineConfig(model="tiny", max_batch_size=8))
    try:
        params = SamplingParams(max_new_tokens=40, ignore_eos=True)
        prompts = [f"prompt number {i}" for i in range(8)]
        solo = []
        for p in prompts:
            solo.append([e.id for e in await collect(engine.submit(p, params))])
        running = [engine.submit(p, params) for p in prompts]
        queued = engine.submit("the ninth request", SamplingParams(max_new_tokens=5))
        victim = running[3]
        await victim.__anext__()  # it is in the batch now
        # The scheduler may have taken the eight in two groups (they reach its thread one by
        # one): wait for the batch to fill, as it must while the ninth waits.
        deadline = asyncio.get_running_loop().time() + 10
        while engine.metrics.batch_size < 8 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.005)
        assert engine.metrics.batch_size == 8
        assert not queued.finished()
        await victim.aclose()
        queued_events = await asyncio.wait_for(collect(queued), 30)
        assert queued_events[-1].finish_reason is not None
        survivors = [r for i, r in enumerate(running) if i != 3]
        results = await asyncio.gather(*[collect(s) for s in survivors])
        for i, events in zip([i for i in range(8) if i != 3], results, strict=True):
            assert [e.id for e in events] == solo[i][-len(events) :]
            assert events[-1].finish_reason is FinishReason.LENGTH
        assert engine.active_requests == 0
        assert engine.metrics.finish_reasons["cancelled"] == 1
    finally:
        engine.shutdown()


async def test_cancelled_request_leaves_batch_within_a_step(any_engine):
    engine = any_engine
    stream = engine.submit("cancel me", SamplingParams(max_new_tokens=2000, ignore_eos=True))
    await stream.__anext__()
    await stream.aclose()
    for _ in range(200):
        if engine.metrics.batch_size == 0 and engine.active_requests == 0:
            break
        await asyncio.sleep(0.01)
    assert engine.metrics.batch_size == 0
    assert engine.active_requests == 0


@pytest.mark.parametrize("concurrency", [1, 4])
async def test_truncate_keeps_the_last_prompt_tokens(engine, concurrency):
    prompt = "one two three four five six seven eight nine ten"
    full = engine.encode(prompt)
    streams = [
        engine.submit(prompt, SamplingParams(max_new_tokens=3, truncate=4))
        for _ in range(concurrency)
    ]
    for s in streams:
        await collect(s)
        assert s.prompt_ids == full[-4:]


async def test_a_failing_prefill_ends_its_requests_with_an_error_and_serving_goes_on(tiny_dir):
    # transformers' forward, whose embedding module takes a hook (the lean path has no modules).
    engine = Engine.load(EngineConfig(model="tiny", fast_path=False))
    params = SamplingParams(max_new_tokens=4, ignore_eos=True)

    def fail_prompts(module, args):
        if args[0].shape[1] > 1:  # a prompt, not a decode step's single token
            raise RuntimeError("injected prefill failure")

    try:
        hook = engine.model.model.get_input_embeddings().register_forward_pre_hook(fail_prompts)
        try:
            events = await asyncio.wait_for(collect(engine.submit("hello there", params)), 30)
        finally:
            hook.remove()
        assert events[-1].finish_reason is FinishReason.ERROR
        assert "injected prefill failure" in events[-1].error
        events = await asyncio.wait_for(collect(engine.submit("hello there", params)), 30)
        assert events[-1].finish_reason is FinishReason.LENGTH
    finally:
        engine.shutdown()
