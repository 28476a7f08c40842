"""A lean forward pass for Llama-family models (Llama, Mistral, Qwen2) over the batch.

It runs the checkpoint's own weights with fused projections (q/k/v in one matmul,
gate/up in one) and a key/value cache of row slots that is written in place: each decode
step writes one column for the whole batch (transformers' ``DynamicCache`` copies the cache
instead), a joining request's prefilled keys go into the free slots after the running rows,
and a finished request's slot is refilled by moving the last running row into it, so only
that row's history is copied. The cache is reallocated only when the rows or columns do not
fit (every ``GROWTH`` steps at most, dropping columns no row uses) and freed when the batch
empties. Other architectures use :mod:`runner`.

The weights come either from a transformers model (:meth:`LlamaWeights.from_model`, whose
own rotary module honours every rope variant) or, for a checkpoint with the default rope,
straight from its safetensors files (:func:`load_weights`): that skips importing
transformers' model classes and building the module tree, which is most of a small model's
start (the built-in models load in ~0.1 s this way, ~4 s through transformers here)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from streamhost.engine.batch import BatchRunner, penalised

SUPPORTED = ("llama", "mistral", "qwen2")
GROWTH = 256  # cache columns added at a time


def supports(model) -> bool:
    """True when :class:`LlamaRunner` can run the transformers model ``model`` exactly."""
    config = model.config
    if not _plain_layout(config.to_dict()):
        return False
    inner = getattr(model, "model", None)
    return inner is not None and hasattr(inner, "rotary_emb") and hasattr(model, "lm_head")


def _plain_layout(config: dict) -> bool:
    """A Llama-family layout this forward pass computes: full attention, SiLU."""
    if config.get("model_type") not in SUPPORTED:
        return False
    if config.get("use_sliding_window") or (
        config["model_type"] == "mistral" and config.get("sliding_window")
    ):
        return False
    return config.get("hidden_act", "silu") == "silu"


def _rope(config: dict) -> tuple[str, float]:
    """The rope variant and base of a config (transformers 5's ``rope_parameters``, or the
    ``rope_scaling``/``rope_theta`` of older configs)."""
    params = config.get("rope_parameters") or config.get("rope_scaling") or {}
    kind = params.get("rope_type") or params.get("type") or "default"
    return kind, float(params.get("rope_theta") or config.get("rope_theta") or 10000.0)


def loadable(path: Path, config: dict) -> bool:
    """True when :func:`load_weights` can load the checkpoint in ``path`` on its own."""
    return (
        _plain_layout(config)
        and _rope(config)[0] == "default"
        and not config.get("quantization_config")
        and bool(_weight_files(path))
    )


def _weight_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text("utf-8"))["weight_map"].values()))
        return [path / name for name in names]
    single = path / "model.safetensors"
    return [single] if single.is_file() else []


class _DefaultRope:
    """The default rotary embedding, computed as transformers' ``LlamaRotaryEmbedding``."""

    def __init__(self, head_dim: int, theta: float, device: torch.device) -> None:
        steps = torch.arange(0, head_dim, 2, dtype=torch.int64).to(device, torch.float)
        self.inv_freq = 1.0 / (theta ** (steps / head_dim))

    def __call__(self, h: torch.Tensor, positions: torch.Tensor):
        freqs = (self.inv_freq[None, :, None] @ positions[:, None, :].float()).transpose(1, 2)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(h.dtype), emb.sin().to(h.dtype)


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

    def __init__(self, get, eps: float) -> None:
        """``get(name)`` is the layer's tensor ``name`` (``self_attn.q_proj.weight``, ...) or
        None where the checkpoint has none (biases)."""
        self.qkv = torch.cat([get(f"self_attn.{p}_proj.weight") for p in "qkv"])
        biases = [get(f"self_attn.{p}_proj.bias") for p in "qkv"]
        self.qkv_bias = torch.cat(biases) if all(b is not None for b in biases) else None
        self.o = get("self_attn.o_proj.weight")
        self.o_bias = get("self_attn.o_proj.bias")
        gate = get("mlp.gate_proj.weight")
        self.gate_up = torch.cat([gate, get("mlp.up_proj.weight")])
        self.down = get("mlp.down_proj.weight")
        self.inter = gate.shape[0]
        self.norm1 = get("input_layernorm.weight")
        self.norm2 = get("post_attention_layernorm.weight")
        self.eps = eps


@dataclass
class LlamaWeights:
    """What the forward pass reads: the fused layers, embeddings, norm and head."""

    heads: int
    kv_heads: int
    head_dim: int
    layers: list[_Layer]
    embed: torch.Tensor
    rotary: Any  # (hidden, positions) -> (cos, sin)
    final_norm: torch.Tensor
    final_eps: float
    lm_head: torch.Tensor

    @property
    def vocab_size(self) -> int:
        """Rows of the embedding: the valid token ids are below it."""
        return self.embed.shape[0]

    @classmethod
    def from_tensors(cls, config: dict, tensors: dict, rotary: Any) -> LlamaWeights:
        """From a checkpoint's tensors by their transformers names (``model.layers.0...``)."""
        heads = config["num_attention_heads"]
        eps = config.get("rms_norm_eps", 1e-6)
        embed = tensors["model.embed_tokens.weight"]
        layers = [
            _Layer(lambda name, i=i: tensors.get(f"model.layers.{i}.{name}"), eps)
            for i in range(config["num_hidden_layers"])
        ]
        return cls(
            heads=heads,
            kv_heads=config.get("num_key_value_heads") or heads,
            head_dim=config.get("head_dim") or config["hidden_size"] // heads,
            layers=layers,
            embed=embed,
            rotary=rotary,
            final_norm=tensors["model.norm.weight"],
            final_eps=eps,
            lm_head=tensors.get("lm_head.weight", embed),  # tied when the file has none
        )

    @classmethod
    def from_model(cls, model) -> LlamaWeights:
        """From a loaded transformers model (any rope variant: its own module computes it)."""
        with torch.no_grad():
            tensors = {name: t.detach() for name, t in model.named_parameters()}
            if "lm_head.weight" not in tensors:
                tensors["lm_head.weight"] = model.lm_head.weight.detach()
            return cls.from_tensors(model.config.to_dict(), tensors, model.model.rotary_emb)


def load_weights(path: Path, config: dict, device: torch.device, dtype: torch.dtype):
    """The checkpoint in ``path`` (see :func:`loadable`) on ``device`` in ``dtype``."""
    from safetensors.torch import load_file

    tensors: dict[str, torch.Tensor] = {}
    for file in _weight_files(path):
        for name, tensor in load_file(file).items():
            # A copy of its own: decode from the file's buffers was ~3 % slower (batch 32).
            tensors[name] = tensor.to(device=device, dtype=dtype, copy=True)
    weights = LlamaWeights.from_tensors(config, tensors, None)
    weights.rotary = _DefaultRope(weights.head_dim, _rope(config)[1], device)
    return weights


class LlamaRunner(BatchRunner):
    """The running batch with a preallocated, right-aligned KV cache per layer."""

    def __init__(self, weights: LlamaWeights, device: torch.device) -> None:
        super().__init__(device)
        self.heads = weights.heads
        self.kv_heads = weights.kv_heads
        self.head_dim = weights.head_dim
        self.layers = weights.layers
        self.embed = weights.embed
        self.rotary = weights.rotary
        self.final_norm = weights.final_norm
        self.final_eps = weights.final_eps
        self.lm_head = weights.lm_head
        # Per layer [row slots, kv heads, columns, head dim]: the running rows are slots
        # [0, len(rows)); their histories end at column `_length` (right-aligned) and start no
        # earlier than `_start`. `_mask` is [row slots, columns]: True for real tokens.
        self._keys: list[torch.Tensor] = []
        self._values: list[torch.Tensor] = []
        self._mask: torch.Tensor | None = None
        self._positions: torch.Tensor | None = None
        self._start = 0
        self._length = 0

    # -- the forward pass ------------------------------------------------------------------

    def _forward(self, ids: torch.Tensor, positions: torch.Tensor, attend, store) -> torch.Tensor:
        """Hidden states -> logits of the last position; ``attend``/``store`` handle the cache."""
        batch, seq = ids.shape
        h = F.embedding(ids, self.embed)
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
        return self._select(logits, rows, any(penalised(r) for r in rows))

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
        self._needs_history = any(penalised(r) for r in self.rows)
        self._padded = not bool(self._mask[:n, self._start : self._length].all())

    def reset(self) -> None:
        """Forget the whole batch."""
        super().reset()
        self._keys, self._values, self._start, self._length = [], [], 0, 0
        self._mask = self._positions = None

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
