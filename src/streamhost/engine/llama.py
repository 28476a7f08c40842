"""A lean forward pass for Llama-family models (Llama, Mistral, Qwen2) over the batch.

It runs the checkpoint's own weights with fused projections (q/k/v in one matmul,
gate/up in one) and a key/value cache of row slots that is written in place: each decode
step writes one column for the whole batch (transformers' ``DynamicCache`` copies the cache
instead), a joining request's prefilled keys go into the free slots after the running rows,
and a finished request's slot is refilled by moving the last running row into it, so only
that row's history is copied. The cache is reallocated only when the rows or columns do not
fit (every ``GROWTH`` steps at most, dropping columns no row uses) and freed when the batch
empties. Rotary embeddings come from the model's own module, so every rope variant the
checkpoint uses is honoured. Other architectures use :mod:`runner`."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from streamhost.engine.runner import TorchRunner, _penalised

SUPPORTED = ("llama", "mistral", "qwen2")
GROWTH = 256  # cache columns added at a time


def supports(model) -> bool:
    """True when :class:`LlamaRunner` can run ``model`` exactly."""
    config = model.config
    if getattr(config, "model_type", None) not in SUPPORTED:
        return False
    if getattr(config, "use_sliding_window", False) or (
        config.model_type == "mistral" and getattr(config, "sliding_window", None)
    ):
        return False
    if getattr(config, "hidden_act", "silu") != "silu":
        return False
    inner = getattr(model, "model", None)
    return inner is not None and hasattr(inner, "rotary_emb") and hasattr(model, "lm_head")


class _Layer:
    __slots__ = (
        "down",
        "eps",
        "gate_up",
        "inter",
        "norm1",
        "norm2",
        "o",
        "o_bias",
        "qkv",
        "qkv_bias",
    )

    def __init__(self, layer, eps: float) -> None:
        attn, mlp = layer.self_attn, layer.mlp
        self.qkv = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
        biases = [attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]
        self.qkv_bias = torch.cat(biases) if all(b is not None for b in biases) else None
        self.o = attn.o_proj.weight
        self.o_bias = attn.o_proj.bias
        self.gate_up = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])
        self.down = mlp.down_proj.weight
        self.inter = mlp.gate_proj.weight.shape[0]
        self.norm1 = layer.input_layernorm.weight
        self.norm2 = layer.post_attention_layernorm.weight
        self.eps = eps


class LlamaRunner(TorchRunner):
    """The running batch with a preallocated, right-aligned KV cache per layer."""

    def __init__(self, model, device: torch.device) -> None:
        super().__init__(model, device)
        config = model.config
        self.heads = config.num_attention_heads
        self.kv_heads = getattr(config, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        eps = getattr(config, "rms_norm_eps", 1e-6)
        with torch.no_grad():
            self.layers = [_Layer(layer, eps) for layer in model.model.layers]
        self.embed = model.model.embed_tokens
        self.rotary = model.model.rotary_emb
        self.final_norm = model.model.norm.weight
        self.final_eps = getattr(model.model.norm, "variance_epsilon", eps)
        self.lm_head = model.lm_head.weight
        # Per layer [row slots, kv heads, columns, head dim]: the running rows are slots
        # [0, len(rows)); their histories end at column `_length` (right-aligned) and start no
        # earlier than `_start`. `_mask` is [row slots, columns]: True for real tokens.
        self._keys: list[torch.Tensor] = []
        self._values: list[torch.Tensor] = []
        self._start = 0
        self._length = 0

    # -- the forward pass ------------------------------------------------------------------

    def _forward(self, ids: torch.Tensor, positions: torch.Tensor, attend, store) -> torch.Tensor:
        """Hidden states -> logits of the last position; ``attend``/``store`` handle the cache."""
        batch, seq = ids.shape
        h = self.embed(ids)
        cos, sin = self.rotary(h, positions)
        cos, sin = cos[:, None], sin[:, None]
        half = self.head_dim // 2
        sizes = [self.heads, self.kv_heads, self.kv_heads]
        for index, layer in enumerate(self.layers):
            x = F.rms_norm(h, (h.shape[-1],), layer.norm1, layer.eps)
            qkv = F.linear(x, layer.qkv, layer.qkv_bias)
            qkv = qkv.view(batch, seq, sum(sizes), self.head_dim).transpose(1, 2)
            q, k, v = qkv.split(sizes, dim=1)
            q = q * cos + torch.cat((-q[..., half:], q[..., :half]), -1) * sin
            k = k * cos + torch.cat((-k[..., half:], k[..., :half]), -1) * sin
            keys, values = store(index, k, v)
            attn = attend(q, keys, values)
            attn = attn.transpose(1, 2).reshape(batch, seq, self.heads * self.head_dim)
            h = h + F.linear(attn, layer.o, layer.o_bias)
            x = F.rms_norm(h, (h.shape[-1],), layer.norm2, layer.eps)
            gate, up = F.linear(x, layer.gate_up).split([layer.inter, layer.inter], dim=-1)
            h = h + F.linear(F.silu(gate) * up, layer.down)
        last = F.rms_norm(h[:, -1], (h.shape[-1],), self.final_norm, self.final_eps)
        return F.linear(last, self.lm_head)

    def _sdpa(self, q, keys, values, mask):
        groups = self.heads // self.kv_heads
        if groups > 1:
            keys = keys.repeat_interleave(groups, dim=1)
            values = values.repeat_interleave(groups, dim=1)
        return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)

    def _decode_attention(self, q, keys, values, mask):
        """One query per row as two batched matmuls (on the CPU in float32, faster than SDPA's
        kernel, which loops over rows and heads with a small GEMM each). A key/value head's query
        heads are the rows of one product, so grouped-query keys are never copied."""
        n, groups = q.shape[0], self.heads // self.kv_heads
        q = q.view(n, self.kv_heads, groups, self.head_dim)
        scores = torch.matmul(q, keys.transpose(-1, -2)).mul_(self.head_dim**-0.5)
        if mask is not None:
            scores.add_(mask)  # [n, 1, 1, columns]: one row's mask for all its heads
        out = torch.matmul(torch.softmax(scores, -1), values)
        return out.view(n, self.heads, 1, self.head_dim)

    # -- batch composition ------------------------------------------------------------------

    @torch.inference_mode()
    def add(self, rows: list) -> list:
        """Prefill ``rows`` together, merge them into the batch; return their first tokens."""
        prompts = [r.prompt_ids for r in rows]
        width = max(len(p) for p in prompts)
        ids = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.bool)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p) :] = True
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        causal = torch.ones((width, width), dtype=torch.bool, device=self.device).tril()
        # Padding keys are hidden; every query still sees itself, so no row of the softmax
        # is empty (an empty row would put NaN into the padding's keys and values).
        eye = torch.eye(width, dtype=torch.bool, device=self.device)
        attn_mask = _additive((causal & mask[:, None, :]) | eye, self.lm_head.dtype)[:, None]
        new_keys: list[torch.Tensor] = []
        new_values: list[torch.Tensor] = []

        def store(index, k, v):
            new_keys.append(k)
            new_values.append(v)
            return k, v

        logits = self._forward(
            ids, positions, lambda q, k, v: self._sdpa(q, k, v, attn_mask), store
        )
        self._place_rows(rows, new_keys, new_values, mask, mask.sum(-1))
        return self._select(logits, rows, any(_penalised(r) for r in rows))

    def _place_rows(self, rows, keys, values, mask, positions) -> None:
        """Write prefilled rows into the free slots after the running ones, right-aligned."""
        n, k, width = len(self.rows), len(rows), mask.shape[1]
        self._reserve(n + k, width)
        lo, hi = self._length - width, self._length
        for cache, new in zip(self._keys + self._values, keys + values, strict=True):
            cache[n : n + k, :, lo:hi] = new
        self._mask[n : n + k] = False
        self._mask[n : n + k, lo:hi] = mask
        self._start = min(self._start, lo) if n else lo
        self._positions = positions if not n else torch.cat([self._positions, positions])
        self.rows.extend(rows)
        self._refresh()

    def _reserve(self, rows: int, width: int) -> None:
        """Room for `rows` rows, histories `width` columns long and the next decode column.

        The cache keeps its slots and columns between steps; only when they do not fit is it
        reallocated, the live columns moved to the front (leading columns no row uses are
        dropped then) with `GROWTH` spare columns after them.
        """
        n = len(self.rows)
        row_cap = self._keys[0].shape[0] if self._keys else 0
        col_cap = self._keys[0].shape[2] if self._keys else 0
        if n and rows <= row_cap and width <= self._length < col_cap:
            return
        if not n:
            self._start = self._length = 0
        used = self._length - self._start
        need = max(used, width)
        dst = need - used
        shape = (max(rows, row_cap), self.kv_heads, need + GROWTH, self.head_dim)
        dtype, device = self.lm_head.dtype, self.lm_head.device

        def moved(old: torch.Tensor | None) -> torch.Tensor:
            # Zeros, not empty memory: masked keys must still be finite numbers.
            fresh = torch.zeros(shape, dtype=dtype, device=device)
            if old is not None and used:
                fresh[:n, :, dst:need] = old[:n, :, self._start : self._length]
            return fresh

        layers = len(self.layers)
        self._keys = [moved(t) for t in self._keys] or [moved(None) for _ in range(layers)]
        self._values = [moved(t) for t in self._values] or [moved(None) for _ in range(layers)]
        mask = torch.zeros(shape[0], shape[2], dtype=torch.bool, device=device)
        if used:
            mask[:n, dst:need] = self._mask[:n, self._start : self._length]
        self._mask = mask
        self._start, self._length = dst, need

    @torch.inference_mode()
    def remove(self, rows: list) -> None:
        """Drop ``rows``: running rows from the end move into the freed slots (only their
        live columns are copied), then leading columns no row uses are skipped."""
        gone = {id(r) for r in rows}
        keep = [id(r) not in gone for r in self.rows]
        if all(keep):
            return
        survivors = sum(keep)
        if not survivors:
            self.reset()  # an idle engine holds no cache
            return
        holes = [i for i in range(survivors) if not keep[i]]
        movers = [i for i in range(survivors, len(self.rows)) if keep[i]]
        if holes:
            dst = torch.tensor(holes, device=self.device)
            src = torch.tensor(movers, device=self.device)
            s, e = self._start, self._length
            for cache in self._keys + self._values:
                cache[dst, :, s:e] = cache[src, :, s:e]
            self._mask[dst] = self._mask[src]
            self._positions[dst] = self._positions[src]
            for hole, mover in zip(holes, movers, strict=True):
                self.rows[hole] = self.rows[mover]
        del self.rows[survivors:]
        self._positions = self._positions[:survivors]
        live = self._mask[:survivors, self._start : self._length].any(0)
        self._start += int(live.to(torch.int8).argmax())
        self._refresh()

    def _refresh(self) -> None:
        n = len(self.rows)
        self._needs_history = any(_penalised(r) for r in self.rows)
        self._padded = not bool(self._mask[:n, self._start : self._length].all())

    def reset(self) -> None:
        """Forget the whole batch."""
        super().reset()
        self._keys, self._values, self._start, self._length = [], [], 0, 0

    # -- decoding ---------------------------------------------------------------------------

    @torch.inference_mode()
    def step(self) -> list:
        """Decode one token for every row, writing one cache column for the batch."""
        n = len(self.rows)
        self._reserve(n, 0)
        start, column = self._start, self._length
        self._mask[:n, column] = True
        end = column + 1
        last = torch.tensor(
            [r.output_ids[-1] for r in self.rows], dtype=torch.long, device=self.device
        )
        attn_mask = (
            _additive(self._mask[:n, None, None, start:end], self.lm_head.dtype)
            if self._padded
            else None
        )

        def store(index, k, v):
            self._keys[index][:n, :, column] = k[:, :, 0]
            self._values[index][:n, :, column] = v[:, :, 0]
            return self._keys[index][:n, :, start:end], self._values[index][:n, :, start:end]

        # On a GPU SDPA's fused kernel is one launch where the matmuls are five; in half
        # precision SDPA keeps the scores in float32, which the matmuls would not.
        fp32_cpu = self.device.type == "cpu" and self.lm_head.dtype == torch.float32
        attend = self._decode_attention if fp32_cpu else self._sdpa
        logits = self._forward(
            last[:, None],
            self._positions[:, None],
            lambda q, k, v: attend(q, k, v, attn_mask),
            store,
        )
        self._length = end
        self._positions = self._positions + 1
        return self._select(logits, self.rows, self._needs_history)


def _additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean attention mask as the additive float mask SDPA takes without converting:
    built once per forward instead of once per layer (and SDPA is faster with it on the CPU,
    the cache being a strided view)."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(
        ~allowed, float("-inf")
    )
