"""The batched forward pass: one running batch with a left-padded KV cache.

Rows are requests. Their caches are aligned on the right, so every decode step appends
one column for the whole batch; shorter histories are padded on the left and masked.
New requests are prefilled together and their caches concatenated onto the batch;
finished ones are removed by index, and padding no row needs any more is trimmed.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F

from streamhost.engine.batch import BatchRunner, penalised
from streamhost.engine.types import Sample


class TorchRunner(BatchRunner):
    """Runs prefill and decode steps of a transformers causal LM over the running batch."""

    def __init__(self, model, device: torch.device) -> None:
        super().__init__(device)
        self.model = model
        # transformers 5.24 renamed ``past_key_values`` to ``cache``; older ones lack it.
        params = inspect.signature(model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self._cache = None
        self._mask: torch.Tensor | None = None  # [batch, cache_len], 1 for real tokens
        self._positions: torch.Tensor | None = None  # [batch], next position id per row

    # -- batch composition -------------------------------------------------------------

    @torch.inference_mode()
    def add(self, rows: list) -> list[Sample]:
        """Prefill ``rows`` together, merge them into the batch; return their first tokens."""
        prompts = [r.prompt_ids for r in rows]
        width = max(len(p) for p in prompts)
        ids = torch.full((len(rows), width), 0, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
            **{self._cache_arg: cache},
        )
        next_positions = mask.sum(-1)
        self._merge(rows, cache, mask, next_positions)
        return self._select(out.logits[:, -1, :], rows, any(penalised(r) for r in rows))

    def _merge(self, rows: list, cache, mask: torch.Tensor, positions: torch.Tensor) -> None:
        if self._cache is None or not self.rows:
            self.rows = list(rows)
            self._cache, self._mask, self._positions = cache, mask, positions
            self._needs_history = any(penalised(r) for r in self.rows)
            self._padded = not bool(mask.all())
            return
        assert self._mask is not None and self._positions is not None
        old_len, new_len = self._mask.shape[1], mask.shape[1]
        width = max(old_len, new_len)
        for old_layer, new_layer in zip(self._cache.layers, cache.layers, strict=True):
            old_layer.keys = torch.cat(
                [
                    _pad_left(old_layer.keys, width - old_len),
                    _pad_left(new_layer.keys, width - new_len),
                ]
            )
            old_layer.values = torch.cat(
                [
                    _pad_left(old_layer.values, width - old_len),
                    _pad_left(new_layer.values, width - new_len),
                ]
            )
        self._mask = torch.cat(
            [F.pad(self._mask, (width - old_len, 0)), F.pad(mask, (width - new_len, 0))]
        )
        self._positions = torch.cat([self._positions, positions])
        self.rows.extend(rows)
        self._needs_history = self._needs_history or any(penalised(r) for r in rows)
        self._padded = not bool(self._mask.all())

    def remove(self, rows: list) -> None:
        """Drop ``rows`` from the batch and free their cache."""
        gone = {id(r) for r in rows}
        keep = [i for i, r in enumerate(self.rows) if id(r) not in gone]
        if len(keep) == len(self.rows):
            return
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self.reset()
            return
        assert self._mask is not None and self._positions is not None
        index = torch.tensor(keep, device=self.device)
        mask = self._mask.index_select(0, index)
        # Columns that are padding in every remaining row can go.
        start = int(mask[:, : self._used_columns()].any(0).to(torch.int8).argmax())
        self._keep_cache(index, start)
        self._mask = mask[:, start:]
        self._positions = self._positions.index_select(0, index)
        self._needs_history = any(penalised(r) for r in self.rows)
        self._padded = not bool(self._mask[:, : self._used_columns()].all())

    def _used_columns(self) -> int:
        """Cache columns holding keys and values (the rest is spare capacity)."""
        assert self._mask is not None
        return self._mask.shape[1]

    def _keep_cache(self, index: torch.Tensor, start: int) -> None:
        """Keep the cache rows in ``index``, from column ``start`` on."""
        for layer in self._cache.layers:
            layer.keys = layer.keys.index_select(0, index)[:, :, start:]
            layer.values = layer.values.index_select(0, index)[:, :, start:]

    def reset(self) -> None:
        """Forget the whole batch (after an error, or when it empties)."""
        super().reset()
        self._cache = self._mask = self._positions = None

    # -- decoding -------------------------------------------------------------------------

    @torch.inference_mode()
    def step(self) -> list[Sample]:
        """Decode one token for every row, in ``self.rows`` order."""
        assert self._mask is not None and self._positions is not None
        last = torch.tensor([r.output_ids[-1] for r in self.rows], dtype=torch.long)
        last = last.to(self.device)[:, None]
        ones = torch.ones((len(self.rows), 1), dtype=self._mask.dtype, device=self.device)
        self._mask = torch.cat([self._mask, ones], dim=1)
        out = self.model(
            input_ids=last,
            attention_mask=self._mask if self._padded else None,
            position_ids=self._positions[:, None],
            use_cache=True,
            **{self._cache_arg: self._cache},
        )
        self._positions = self._positions + 1
        return self._select(out.logits[:, -1, :], self.rows, self._needs_history)


def _pad_left(t: torch.Tensor, n: int) -> torch.Tensor:
    return F.pad(t, (0, 0, n, 0)) if n else t
