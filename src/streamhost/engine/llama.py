"""A lean forward pass for Llama-family models (Llama, Mistral, Qwen2) over the batch.

It runs the checkpoint's own weights with fused projections (q/k/v in one matmul,
gate/up in one) and a key/value cache that grows in place: each decode step writes one
column for the whole batch instead of copying the cache, which is what transformers'
``DynamicCache`` does. Rotary embeddings come from the model's own module, so every rope
variant the checkpoint uses is honoured. Other architectures use :mod:`runner`.
"""

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
        self._keys: list[torch.Tensor] = []
        self._values: list[torch.Tensor] = []
        self._length = 0  # cache columns in use

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
        attn_mask = ((causal & mask[:, None, :]) | eye)[:, None]
        new_keys: list[torch.Tensor] = []
        new_values: list[torch.Tensor] = []

        def store(index, k, v):
            new_keys.append(k)
            new_values.append(v)
            return k, v

        logits = self._forward(
            ids, positions, lambda q, k, v: self._sdpa(q, k, v, attn_mask), store
        )
        self._merge_rows(rows, new_keys, new_values, mask, mask.sum(-1))
        return self._select(logits, rows, any(_penalised(r) for r in rows))

    def _merge_rows(self, rows, keys, values, mask, positions) -> None:
        new_len = mask.shape[1]
        if not self.rows:
            capacity = new_len + GROWTH
            self._keys = [_pad_right(k, capacity - new_len) for k in keys]
            self._values = [_pad_right(v, capacity - new_len) for v in values]
            self._mask = F.pad(mask, (0, capacity - new_len))
            self._positions = positions
            self._length = new_len
            self.rows = list(rows)
        else:
            old_len = self._length
            width = max(old_len, new_len)
            capacity = max(self._keys[0].shape[2] + (width - old_len), width + GROWTH)
            self._keys = [
                torch.cat(
                    [_place(o, old_len, width, capacity), _place(n, new_len, width, capacity)]
                )
                for o, n in zip(self._keys, keys, strict=True)
            ]
            self._values = [
                torch.cat(
                    [_place(o, old_len, width, capacity), _place(n, new_len, width, capacity)]
                )
                for o, n in zip(self._values, values, strict=True)
            ]
            self._mask = torch.cat(
                [
                    _place_mask(self._mask, old_len, width, capacity),
                    _place_mask(mask, new_len, width, capacity),
                ]
            )
            self._positions = torch.cat([self._positions, positions])
            self._length = width
            self.rows.extend(rows)
        self._needs_history = any(_penalised(r) for r in self.rows)
        self._padded = not bool(self._mask[:, : self._length].all())

    def _used_columns(self) -> int:
        return self._length

    def _keep_cache(self, index: torch.Tensor, start: int) -> None:
        self._keys = [k.index_select(0, index)[:, :, start:] for k in self._keys]
        self._values = [v.index_select(0, index)[:, :, start:] for v in self._values]
        self._length -= start

    def reset(self) -> None:
        """Forget the whole batch."""
        super().reset()
        self._keys, self._values, self._length = [], [], 0

    # -- decoding ---------------------------------------------------------------------------

    @torch.inference_mode()
    def step(self) -> list:
        """Decode one token for every row, writing one cache column for the batch."""
        if self._length == self._keys[0].shape[2]:
            self._keys = [_pad_right(k, GROWTH) for k in self._keys]
            self._values = [_pad_right(v, GROWTH) for v in self._values]
            self._mask = F.pad(self._mask, (0, GROWTH))
        column = self._length
        self._mask[:, column] = True
        end = column + 1
        last = torch.tensor(
            [r.output_ids[-1] for r in self.rows], dtype=torch.long, device=self.device
        )
        attn_mask = self._mask[:, None, None, :end] if self._padded else None

        def store(index, k, v):
            self._keys[index][:, :, column] = k[:, :, 0]
            self._values[index][:, :, column] = v[:, :, 0]
            return self._keys[index][:, :, :end], self._values[index][:, :, :end]

        logits = self._forward(
            last[:, None],
            self._positions[:, None],
            lambda q, k, v: self._sdpa(q, k, v, attn_mask),
            store,
        )
        self._length = end
        self._positions = self._positions + 1
        return self._select(logits, self.rows, self._needs_history)


def _pad_right(t: torch.Tensor, n: int) -> torch.Tensor:
    return F.pad(t, (0, 0, 0, n))


def _place(t: torch.Tensor, used: int, width: int, capacity: int) -> torch.Tensor:
    # Right-align the ``used`` columns at ``width`` inside a ``capacity``-column tensor.
    return F.pad(t[:, :, :used], (0, 0, width - used, capacity - width))


def _place_mask(mask: torch.Tensor, used: int, width: int, capacity: int) -> torch.Tensor:
    return F.pad(mask[:, :used], (width - used, capacity - width))
