"""Requests that cannot run are refused before queueing, with TGI's messages."""

from __future__ import annotations

import pytest

from streamhost.engine import Engine, EngineConfig, OverloadedError, SamplingParams, ValidationError


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (SamplingParams(temperature=0.0), "`temperature` must be strictly positive"),
        (SamplingParams(repetition_penalty=0), "`repetition_penalty` must be strictly positive"),
        (SamplingParams(frequency_penalty=3), "`frequency_penalty` must be >= -2.0 and <= 2.0"),
        (SamplingParams(top_p=0.0), "`top_p` must be > 0.0 and < 1.0"),
        (SamplingParams(typical_p=1.5), "`typical_p` must be > 0.0 and < 1.0"),
        (SamplingParams(top_k=0), "`top_k` must be strictly positive"),
        (SamplingParams(max_new_tokens=0), "`max_new_tokens` must be strictly positive"),
        (
            SamplingParams(stop=["a", "b", "c", "d", "e"]),
            "`stop` supports up to 4 stop sequences. Given: 5",
        ),
        (SamplingParams(top_n_tokens=9), "`top_n_tokens` must be >= 0 and <= 5. Given: 9"),
        (SamplingParams(truncate=0), "`truncate` must be strictly positive and less than"),
        (SamplingParams(temperature=float("nan")), "`temperature` must be a finite number"),
    ],
)
async def test_bad_parameters_are_refused_with_tgi_messages(engine, params, message):
    with pytest.raises(ValidationError) as info:
        engine.submit("hello", params)
    assert str(info.value).startswith("Input validation error: " + message)
    assert engine.active_requests == 0


async def test_empty_inputs_are_refused(engine):
    with pytest.raises(ValidationError, match="`inputs` cannot be empty"):
        engine.submit("", SamplingParams())


async def test_too_long_input_and_total_are_refused_with_tgi_messages(tiny_dir):
    engine = Engine.load(EngineConfig(model="tiny", max_input_tokens=10, max_total_tokens=20))
    try:
        with pytest.raises(ValidationError) as info:
            engine.submit("word " * 30, SamplingParams(max_new_tokens=2))
        assert "`inputs` tokens + `max_new_tokens` must be <= 20. Given: " in str(info.value)
        with pytest.raises(ValidationError) as info:
            engine.submit("word " * 8, SamplingParams(max_new_tokens=19))
        assert "`max_new_tokens`" in str(info.value)
        with pytest.raises(ValidationError) as info:
            engine.submit("word " * 12, SamplingParams(max_new_tokens=1))
        assert "`inputs` must have less than 10 tokens. Given: " in str(info.value)
    finally:
        engine.shutdown()


async def test_top_p_of_one_is_accepted(engine):
    stream = engine.submit("hi", SamplingParams(max_new_tokens=2, do_sample=True, top_p=1.0))
    assert [e async for e in stream][-1].finish_reason is not None


async def test_overloaded_engine_refuses_new_requests(tiny_dir):
    engine = Engine.load(EngineConfig(model="synthetic:50", max_concurrent_requests=2))
    try:
        a = engine.submit("a", SamplingParams(max_new_tokens=5))
        b = engine.submit("b", SamplingParams(max_new_tokens=5))
        with pytest.raises(OverloadedError, match="Model is overloaded"):
            engine.submit("c", SamplingParams(max_new_tokens=5))
        await a.aclose()
        c = engine.submit("c", SamplingParams(max_new_tokens=1))
        assert [e async for e in c][-1].finish_reason is not None
        await b.aclose()
    finally:
        engine.shutdown()


@pytest.mark.parametrize("bad", [[5, 647], [-1], [3, "7"], [True]])
def test_token_ids_outside_the_vocabulary_are_refused(engine, bad):
    with pytest.raises(ValidationError, match=r"token ids must be integers in \[0, 647\)"):
        engine.submit(bad, SamplingParams(max_new_tokens=2))
