"""What every runner shares: the running rows, in order, and the choice of their tokens.

The runners (`runner.TorchRunner` over transformers' forward, `llama.LlamaRunner` over the
lean one) build on this module and import nothing of each other; `loader.make_runner`
chooses between them.
"""

from __future__ import annotations

import torch

from streamhost.engine.sampling import RowSampler, select_tokens
from streamhost.engine.types import Sample


class RunnerRow:
    """What the runner needs from a request: its ids, parameters and sampler."""

    prompt_ids: list[int]
    output_ids: list[int]
    sampler: RowSampler


class BatchRunner:
    """What every runner shares: the running rows, in order, and the choice of their tokens."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.rows: list = []
        self._needs_history = False
        # True when some row has left padding; without any, the model may take its
        # mask-free (causal) attention path, as a bare decode loop does.
        self._padded = False

    def reset(self) -> None:
        """Forget the whole batch (after an error, or when it empties)."""
        self.rows = []
        self._needs_history = self._padded = False

    def _select(self, logits: torch.Tensor, rows: list, penalised: bool) -> list[Sample]:
        samplers = [r.sampler for r in rows]
        # Token histories are built only when some row needs them for a penalty.
        if penalised:
            history = [r.prompt_ids + r.output_ids for r in rows]
            outputs = [r.output_ids for r in rows]
            return select_tokens(logits, samplers, history, outputs)
        return select_tokens(logits, samplers)


def penalised(row) -> bool:
    """Whether a row's sampling needs its token history (a repetition or frequency penalty)."""
    p = row.sampler.params
    return bool(
        (p.repetition_penalty not in (None, 1.0)) or p.frequency_penalty or p.presence_penalty
    )
