"""Engine configuration: the model to load and the batching limits."""

from __future__ import annotations

from dataclasses import dataclass

DTYPES = ("auto", "float32", "bfloat16", "float16")
ENGINES = ("auto", "builtin", "vllm")


@dataclass(slots=True)
class EngineConfig:
    """What to load and how many requests, tokens and stop sequences to admit.

    Token limits left as ``None`` are derived from the model's context window when it is
    loaded (as TGI 2.x does: ``min(context, 4096)`` total, one less for the input).
    """

    model: str = "tiny"
    # Which engine runs the model: ours, vLLM's, or ``auto`` (vLLM where it is installed
    # and a CUDA device is present, else ours). See :func:`streamhost.engine.choose_engine`.
    engine: str = "auto"
    revision: str | None = None
    trust_remote_code: bool = False
    dtype: str = "auto"
    device: str = "auto"
    # Requests decoded together; ``None``: 32 on our engine, vLLM's own default on vLLM.
    max_batch_size: int | None = None
    # Prompt tokens prefilled together in one iteration; ``None``: 4096 on a GPU, 512 on
    # the CPU, where prefill is compute-bound and smaller groups reach first tokens sooner.
    # A single longer prompt is still admitted on its own.
    max_batch_prefill_tokens: int | None = None
    max_input_tokens: int | None = None
    max_total_tokens: int | None = None
    max_concurrent_requests: int = 128
    max_stop_sequences: int = 4
    max_top_n_tokens: int = 5
    max_best_of: int = 1
    default_max_new_tokens: int = 100
    # Use the lean Llama-family forward pass (engine/llama.py) where it applies; off runs
    # every model through transformers' own forward and cache.
    fast_path: bool = True
    # torch intra-op threads for a CPU model in the engine process (``OMP_NUM_THREADS`` in a
    # container's environment); ``None``: one per core but one, which stays free for HTTP
    # (spinning OpenMP threads otherwise starve it).
    cpu_threads: int | None = None
    # vLLM's own settings, passed through when it is the engine (ours has no use for
    # them): tensor parallel degree, quantization method, share of GPU memory to take.
    tensor_parallel_size: int = 1
    quantization: str | None = None
    gpu_memory_utilization: float | None = None

    def resolve_limits(self, context_window: int, device_type: str = "cpu") -> None:
        """Fill the limits the user left open from the model's context window and device."""
        if self.max_batch_size is None:
            self.max_batch_size = 32
        if self.max_batch_prefill_tokens is None:
            self.max_batch_prefill_tokens = 512 if device_type == "cpu" else 4096
        if self.max_total_tokens is None:
            self.max_total_tokens = min(context_window, 4096)
        if self.max_input_tokens is None:
            self.max_input_tokens = self.max_total_tokens - 1
        self.check()

    def check(self) -> None:
        """Reject inconsistent limits with TGI's startup messages."""
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}; got {self.engine!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got {self.dtype!r}")
        for name in ("max_batch_size", "max_batch_prefill_tokens", "max_concurrent_requests"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1; got {getattr(self, name)}")
        if self.max_input_tokens is not None and self.max_total_tokens is not None:
            if self.max_input_tokens >= self.max_total_tokens:
                raise ValueError(
                    f"`max_input_tokens`({self.max_input_tokens}) must be < "
                    f"`max_total_tokens`({self.max_total_tokens})"
                )
