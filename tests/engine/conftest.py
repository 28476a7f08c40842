from __future__ import annotations

import functools

import pytest

from streamhost.engine import Engine, EngineConfig


@pytest.fixture(scope="module")
def engine(tiny_dir):
    """A tiny-model engine shared by a test module."""
    eng = Engine.load(EngineConfig(model="tiny", max_batch_size=32))
    yield eng
    eng.shutdown()


@pytest.fixture(scope="module")
def reference(tiny_dir):
    """transformers' own model of tiny: what the engine's forward pass must match."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_dir).eval()


def greedy_alone(model, prompt_ids: list[int], n: int) -> list[int]:
    """``n`` greedy tokens after ``prompt_ids`` by transformers' ``generate``, one request
    (remembered per model: the fast and the generic engine are checked on the same prompts)."""
    return list(_greedy_alone(model, tuple(prompt_ids), n))


@functools.lru_cache(maxsize=512)
def _greedy_alone(model, prompt_ids: tuple[int, ...], n: int) -> tuple[int, ...]:
    import torch

    with torch.inference_mode():
        out = model.generate(
            torch.tensor([prompt_ids]), max_new_tokens=n, min_new_tokens=n, do_sample=False
        )
    return tuple(out[0, len(prompt_ids) :].tolist())


async def collect(stream):
    """All events of a stream."""
    return [event async for event in stream]
