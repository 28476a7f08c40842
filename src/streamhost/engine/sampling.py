"""Batched next-token selection with per-request parameters.

Every row of the batch has its own parameters and, when sampling, its own random
generator, so a request's tokens never depend on what else is in the batch: the same
seed gives the same tokens alone or amid other requests.
"""

from __future__ import annotations

import random

import torch

from streamhost.engine.types import Sample, SamplingParams


class RowSampler:
    """Sampling state of one request: its random generator and seed."""

    __slots__ = ("generator", "params", "seed")

    def __init__(self, params: SamplingParams) -> None:
        self.params = params
        self.seed: int | None = None
        self.generator: torch.Generator | None = None
        if params.do_sample:
            self.seed = params.seed if params.seed is not None else random.getrandbits(63)
            self.generator = torch.Generator().manual_seed(self.seed % 2**63)


def _apply_penalties(
    logits: torch.Tensor,
    rows: list[int],
    history: list[list[int]],
    outputs: list[list[int]],
    params: list[SamplingParams],
) -> None:
    for row, seen, generated, p in zip(rows, history, outputs, params, strict=True):
        if p.repetition_penalty is not None and p.repetition_penalty != 1.0 and seen:
            ids = torch.tensor(seen, device=logits.device).unique()
            scores = logits[row, ids]
            scores = torch.where(
                scores < 0, scores * p.repetition_penalty, scores / p.repetition_penalty
            )
            logits[row, ids] = scores
        if (p.frequency_penalty or p.presence_penalty) and generated:
            counts = torch.bincount(
                torch.tensor(generated, device=logits.device), minlength=logits.shape[-1]
            ).to(logits.dtype)
            if p.frequency_penalty:
                logits[row] -= p.frequency_penalty * counts
            if p.presence_penalty:
                logits[row] -= p.presence_penalty * (counts > 0).to(logits.dtype)


def _warp(probs_logits: torch.Tensor, p: SamplingParams) -> torch.Tensor:
    """Apply top-k, top-p and typical-p filtering to one row of logits."""
    logits = probs_logits
    if p.top_k is not None and p.top_k < logits.shape[-1]:
        kth = torch.topk(logits, p.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if p.top_p is not None and p.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        # Keep the smallest prefix whose mass reaches top_p (always at least one token).
        remove = cumulative - sorted_logits.softmax(-1) >= p.top_p
        logits = logits.masked_fill(remove.scatter(0, order, remove), float("-inf"))
    if p.typical_p is not None and p.typical_p < 1.0:
        log_probs = logits.log_softmax(-1)
        probs = log_probs.exp()
        entropy = -(torch.nan_to_num(probs * log_probs)).sum()
        shifted = (-log_probs - entropy).abs()
        sorted_shifted, order = torch.sort(shifted)
        cumulative = probs[order].cumsum(-1)
        cutoff = int((cumulative < p.typical_p).sum())
        remove_sorted = torch.ones_like(sorted_shifted, dtype=torch.bool)
        remove_sorted[: cutoff + 1] = False
        logits = logits.masked_fill(remove_sorted.scatter(0, order, remove_sorted), float("-inf"))
    return logits


def select_tokens(
    logits: torch.Tensor,
    samplers: list[RowSampler],
    history: list[list[int]] | None = None,
    outputs: list[list[int]] | None = None,
) -> list[Sample]:
    """Choose the next token of every row of ``logits`` ([batch, vocab], float).

    ``history`` (prompt + generated ids) and ``outputs`` (generated ids) are needed only
    when some row uses a penalty.
    """
    logits = logits.float()
    params = [s.params for s in samplers]
    penalised = [
        i
        for i, p in enumerate(params)
        if (p.repetition_penalty not in (None, 1.0)) or p.frequency_penalty or p.presence_penalty
    ]
    if penalised:
        assert history is not None and outputs is not None
        _apply_penalties(
            logits,
            penalised,
            [history[i] for i in penalised],
            [outputs[i] for i in penalised],
            [params[i] for i in penalised],
        )
    sampled = [i for i, s in enumerate(samplers) if s.generator is not None]
    if sampled:
        temps = [params[i].temperature or 1.0 for i in sampled]
        if any(t != 1.0 for t in temps):
            logits[sampled] = logits[sampled] / torch.tensor(temps, device=logits.device)[:, None]
    logprobs = logits.log_softmax(-1)
    chosen = logprobs.argmax(-1)
    if sampled:
        picks = []
        for i in sampled:
            row_logits = _warp(logits[i], params[i])
            probs = row_logits.softmax(-1)
            picks.append(torch.multinomial(probs, 1, generator=samplers[i].generator))
        chosen[sampled] = torch.cat(picks)
    chosen_logprobs = logprobs.gather(1, chosen[:, None]).squeeze(1)
    top_n = max((p.top_n_tokens for p in params), default=0)
    top_ids = top_lps = None
    if top_n:
        top = torch.topk(logprobs, min(top_n, logprobs.shape[-1]), dim=-1)
        top_ids, top_lps = top.indices.tolist(), top.values.tolist()
    ids_list = chosen.tolist()
    lps_list = chosen_logprobs.tolist()
    samples = []
    for i, p in enumerate(params):
        top_list = None
        if p.top_n_tokens and top_ids is not None and top_lps is not None:
            n = p.top_n_tokens
            top_list = list(zip(top_ids[i][:n], top_lps[i][:n], strict=True))
        samples.append(Sample(ids_list[i], lps_list[i], top_list))
    return samples
