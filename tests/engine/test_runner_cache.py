"""The Llama runner's slot cache under churn: rows joining with prompts shorter and longer
than the running histories, leaving from the middle of the batch, histories growing past
the spare columns. Every row must decode exactly what it decodes alone."""

from __future__ import annotations

import random

import pytest

from streamhost.engine import SamplingParams

from .conftest import greedy_alone

# Hundreds of decode steps, each checked against transformers' generate. (torch and the
# runner are imported by the test: collecting it costs no worker the torch import.)
pytestmark = pytest.mark.slow


class Row:
    def __init__(self, prompt_ids: list[int], budget: int) -> None:
        from streamhost.engine.sampling import RowSampler

        self.prompt_ids = prompt_ids
        self.output_ids: list[int] = []
        self.sampler = RowSampler(SamplingParams())
        self.budget = budget


def test_rows_joining_and_leaving_decode_what_they_decode_alone(engine, reference):
    import torch

    from streamhost.engine.llama import GROWTH, LlamaRunner

    rng = random.Random(7)

    def row(prompt_len: int, budget: int) -> Row:
        return Row([rng.randrange(4, 640) for _ in range(prompt_len)], budget)

    runner = LlamaRunner(engine.model.model, torch.device("cpu"))
    # One row lives past GROWTH columns; one joins with a prompt longer than the running
    # histories (the cache is laid out again); the rest come and go.
    arrivals = {0: [row(12, GROWTH + 40), row(3, 20)], 5: [row(30, 25)], 9: [row(120, 30)]}
    for step in range(12, 200, 7):
        arrivals[step] = [row(rng.randint(1, 60), rng.randint(5, 40)) for _ in range(3)]
    everyone: list[Row] = []
    cancelled: set[int] = set()
    for step in range(GROWTH + 60):
        joining = arrivals.get(step, [])
        if joining:
            for r, sample in zip(joining, runner.add(joining), strict=True):
                r.output_ids.append(sample.token_id)
            everyone += joining
        if not runner.rows:
            break
        for r, sample in zip(list(runner.rows), runner.step(), strict=True):
            r.output_ids.append(sample.token_id)
        done = [r for r in runner.rows if len(r.output_ids) >= r.budget]
        if step % 11 == 10 and len(runner.rows) > 2:  # a cancel from the middle of the batch
            victim = runner.rows[len(runner.rows) // 2]
            if victim not in done:
                done.append(victim)
                cancelled.add(id(victim))
        if done:
            runner.remove(done)
            assert not {id(r) for r in runner.rows} & {id(r) for r in done}

    assert not runner.rows
    assert max(len(r.output_ids) for r in everyone) > GROWTH
    assert cancelled
    for r in everyone:
        if id(r) not in cancelled:
            assert len(r.output_ids) == r.budget
        assert r.output_ids == greedy_alone(reference, r.prompt_ids, len(r.output_ids))
