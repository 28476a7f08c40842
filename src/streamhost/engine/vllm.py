"""vLLM's engine behind :class:`~streamhost.engine.protocol.GenerationEngine`.

Our front does what it does for our own engine: it tokenizes the prompt with the model's
tokenizer and validates every limit before the request is queued (so the APIs answer 4xx
before any 200), then hands vLLM's V1 ``AsyncLLM`` the token ids with delta outputs. Each
delta becomes :class:`TokenEvent` objects in the event loop that submitted the request;
closing the stream cancels the pump task, and vLLM's ``generate`` aborts the request in its
engine core on that cancellation. vLLM is imported here only, and only when chosen.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from pathlib import Path
from typing import Any

from streamhost.engine.config import EngineConfig
from streamhost.engine.core import render_chat, token_offsets
from streamhost.engine.metrics import EngineMetrics
from streamhost.engine.protocol import ModelInfo
from streamhost.engine.stream import RequestStream
from streamhost.engine.types import (
    EngineNotReady,
    FinishReason,
    OverloadedError,
    SamplingParams,
    TokenEvent,
    TopToken,
    ValidationError,
)
from streamhost.engine.validation import prepare_request

log = logging.getLogger("streamhost.engine")

# vLLM on a CPU takes 92 % of the machine's memory for its KV cache unless told otherwise;
# this is what it gets when VLLM_CPU_KVCACHE_SPACE (GiB) is not set.
CPU_KV_CACHE_GIB = "4"


def vllm_sampling(params: SamplingParams, max_new_tokens: int) -> dict[str, Any]:
    """The keyword arguments of vLLM's ``SamplingParams`` for ``params``.

    Raises :class:`ValidationError` for what vLLM cannot honour (never dropped silently).
    """
    if params.typical_p is not None and params.typical_p < 1.0:
        raise ValidationError("`typical_p` is not supported by the vllm engine")
    if params.best_of is not None and params.best_of > 1:
        raise ValidationError("`best_of` is not supported by the vllm engine")
    kwargs: dict[str, Any] = {
        "max_tokens": max_new_tokens,
        "ignore_eos": params.ignore_eos,
        "stop": list(params.stop) or None,
        "include_stop_str_in_output": params.include_stop_str_in_output,
        "seed": params.seed,
        "repetition_penalty": params.repetition_penalty or 1.0,
        "frequency_penalty": params.frequency_penalty or 0.0,
        "presence_penalty": params.presence_penalty or 0.0,
        "skip_special_tokens": True,
    }
    if params.do_sample:
        kwargs["temperature"] = 1.0 if params.temperature is None else params.temperature
        kwargs["top_p"] = 1.0 if params.top_p is None else params.top_p
        kwargs["top_k"] = params.top_k or 0
    else:
        kwargs["temperature"] = 0.0
    # Ask only for what the request reports: the chosen token's log-probability (0), and
    # the alternatives when the API asked for them.
    if params.top_n_tokens:
        kwargs["logprobs"] = params.top_n_tokens
    elif params.logprobs:
        kwargs["logprobs"] = 0
    return kwargs


class VllmEngine:
    """Generation on vLLM's engine (``AsyncLLM``), with our validation and token events."""

    name = "vllm"

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.model_info: ModelInfo | None = None
        self.load_stages: dict[str, float] = {}
        self.vocab: Any = None
        self.tokenizer: Any = None
        self.token_count: int | None = None
        self._metrics = EngineMetrics()
        self._llm: Any = None
        self._sampling: Any = None  # vLLM's SamplingParams class and its helpers
        self._active = 0
        self._ids = itertools.count(1)
        self._ready = False
        self._error: str | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Nothing to begin early: vLLM's start (its compile warm-up) is all in load_model."""

    def load_model(self) -> None:
        """Resolve the model, load our tokenizer, start vLLM's engine (blocking)."""
        from streamhost.engine.loader import make_vocab, resolve_model_path
        from streamhost.engine.tokenizer import load_tokenizer

        config = self.config
        started = time.time()
        path = resolve_model_path(config.model, config.revision, config.trust_remote_code)
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind
        from vllm.v1.engine.async_llm import AsyncLLM

        from vllm import SamplingParams as VllmSampling

        imported = time.time()
        self._sampling = (VllmSampling, TokensPrompt, RequestOutputKind.DELTA)
        self.tokenizer = load_tokenizer(path, config.trust_remote_code)
        self.vocab = make_vocab(path, self.tokenizer)
        args = self._engine_args(path, AsyncEngineArgs)
        log.info("starting vLLM on %s (dtype %s): its warm-up takes minutes", path, args.dtype)
        self._llm = AsyncLLM.from_engine_args(args)
        model_config = self._llm.model_config
        context = int(model_config.max_model_len)
        self.token_count = int(model_config.get_vocab_size())
        # Our limits from vLLM's: a prompt is refused before the 200 when vLLM would refuse it.
        if config.max_total_tokens is None or config.max_total_tokens > context:
            config.max_total_tokens = context
        if config.max_input_tokens is None or config.max_input_tokens >= config.max_total_tokens:
            config.max_input_tokens = config.max_total_tokens - 1
        scheduler = self._llm.vllm_config.scheduler_config
        if config.max_batch_prefill_tokens is None:
            config.max_batch_prefill_tokens = int(scheduler.max_num_batched_tokens)
        if config.max_batch_size is None:
            config.max_batch_size = int(scheduler.max_num_seqs)
        config.check()
        device = str(self._llm.vllm_config.device_config.device_type)
        self.model_info = ModelInfo(
            config.model, str(model_config.dtype).removeprefix("torch."), device, None, context
        )
        self.load_stages = {
            "vllm import": imported - started,
            "vllm engine start": time.time() - imported,
        }
        self._ready = True

    def _engine_args(self, path: Path, args_class: Any) -> Any:
        config = self.config
        device = "cpu"
        try:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        except ImportError:
            pass
        dtype = config.dtype
        if device == "cpu":
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", CPU_KV_CACHE_GIB)
            # vLLM casts to bfloat16 by default; our engine computes in float32 on a CPU,
            # which is also much faster where the CPU has no bfloat16 matrix instructions.
            if dtype == "auto":
                dtype = "float32"
        kwargs: dict[str, Any] = {
            "model": str(path),
            "tokenizer": str(path),
            "dtype": dtype,
            "trust_remote_code": config.trust_remote_code,
            "tensor_parallel_size": config.tensor_parallel_size,
            "disable_log_stats": True,
        }
        if config.max_batch_size is not None:
            kwargs["max_num_seqs"] = config.max_batch_size
        if config.max_total_tokens is not None:
            kwargs["max_model_len"] = config.max_total_tokens
        if config.max_batch_prefill_tokens is not None:
            kwargs["max_num_batched_tokens"] = config.max_batch_prefill_tokens
        if config.quantization:
            kwargs["quantization"] = config.quantization
        if config.gpu_memory_utilization is not None:
            kwargs["gpu_memory_utilization"] = config.gpu_memory_utilization
        return args_class(**kwargs)

    @property
    def ready(self) -> bool:
        """True once vLLM's engine is running and requests are accepted."""
        if self._ready and self._llm is not None and self._llm.errored:
            self._error = "the vLLM engine stopped"
            self._ready = False
        return self._ready

    @property
    def metrics(self) -> EngineMetrics:
        """Our request counters; the batch gauge is vLLM's own count of unfinished requests."""
        if self._llm is not None:
            self._metrics.batch_size = self._llm.get_num_unfinished_requests()
        return self._metrics

    def shutdown(self) -> None:
        """Stop vLLM's engine (its engine-core process goes with it)."""
        self._ready = False
        if self._llm is not None:
            self._llm.shutdown()

    # -- text helpers -------------------------------------------------------------------------

    def token_text(self, token_id: int) -> str:
        """One token's own text."""
        return self.vocab.token_text(token_id)

    def offsets(self, text: str) -> list[tuple[int, str, int, int]]:
        """``(id, text, start, stop)`` per token, with character offsets (for /tokenize)."""
        return token_offsets(self.tokenizer, text)

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """Render a conversation with the model's chat template (or a plain fallback)."""
        return render_chat(self.tokenizer, messages, add_generation_prompt)

    # -- requests ---------------------------------------------------------------------------

    def submit(
        self,
        prompt: str | list[int],
        params: SamplingParams,
        *,
        add_special_tokens: bool = True,
    ) -> RequestStream:
        """Validate as our engine does, map the parameters, and start the request in vLLM."""
        if not self.ready:
            raise EngineNotReady(self._error or "model is loading")
        config = self.config
        ids, max_new = prepare_request(
            prompt,
            params,
            config,
            lambda text: self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"],
            self.token_count,
        )
        sampling_class, tokens_prompt, delta = self._sampling
        vllm_params = sampling_class(**vllm_sampling(params, max_new), output_kind=delta)
        if self._active >= config.max_concurrent_requests:
            raise OverloadedError()
        loop = asyncio.get_running_loop()
        request_id = f"streamhost-{next(self._ids)}"
        task: asyncio.Task | None = None

        def cancel() -> None:
            if task is not None:
                task.cancel()  # vLLM's generate aborts the request on this cancellation

        stream = RequestStream(loop, ids, max_new, cancel=cancel, release=self._release)
        task = loop.create_task(
            self._pump(stream, tokens_prompt(prompt_token_ids=ids), vllm_params, request_id)
        )
        self._active += 1
        self._metrics.requests += 1
        return stream

    def _release(self) -> None:
        self._active -= 1

    async def _pump(self, stream: RequestStream, prompt: Any, params: Any, request_id: str) -> None:
        """Turn vLLM's delta outputs into token events, in this event loop."""
        submitted = time.perf_counter()
        index = 0
        text: list[str] = []
        vocab = self.vocab
        seed = params.seed
        try:
            async for out in self._llm.generate(prompt, params, request_id):
                delta = out.outputs[0]
                ids = list(delta.token_ids)
                logprobs = delta.logprobs
                finish = _finish_reason(delta) if out.finished else None
                if index == 0 and ids:
                    self._metrics.observe_ttft(time.perf_counter() - submitted)
                text.append(delta.text)
                for k, token_id in enumerate(ids):
                    index += 1
                    last = k == len(ids) - 1
                    position = logprobs[k] if logprobs is not None and k < len(logprobs) else None
                    stream.put(
                        TokenEvent(
                            index=index,
                            id=token_id,
                            # The text delta goes with the last token of the output: vLLM
                            # holds back incomplete characters and pending stop strings.
                            text=delta.text if last else "",
                            token_text=vocab.token_text(token_id),
                            logprob=_logprob(position, token_id),
                            special=token_id in vocab.special_ids,
                            top_tokens=_top(position, vocab, params.logprobs),
                            finish_reason=finish if last else None,
                            generated_text="".join(text) if finish and last else None,
                            generated_tokens=index,
                            input_length=len(stream.prompt_ids),
                            seed=seed,
                        )
                    )
                self._metrics.generated_tokens += len(ids)
                if finish is not None:
                    self._metrics.finished(finish)
                    if not ids:  # a last output with no token (a held-back stop string)
                        stream.put(_final(stream, index, finish, "".join(text), delta.text, seed))
        except asyncio.CancelledError:
            self._metrics.finished(FinishReason.CANCELLED)
            raise
        except Exception as exc:  # vLLM failed this request: the APIs report it in-stream
            log.error("vLLM request %s failed: %s: %s", request_id, type(exc).__name__, exc)
            self._metrics.finished(FinishReason.ERROR)
            error = f"{type(exc).__name__}: {exc}".rstrip(": ")
            stream.put(_final(stream, index, FinishReason.ERROR, "".join(text), "", seed, error))


_FINISH = {
    "length": FinishReason.LENGTH,
    "abort": FinishReason.CANCELLED,
    "error": FinishReason.ERROR,
}


def _finish_reason(output: Any) -> FinishReason:
    if output.finish_reason == "stop":
        # A stop string ends on ``stop_reason`` = the string; EOS and stop ids otherwise.
        if isinstance(output.stop_reason, str):
            return FinishReason.STOP_SEQUENCE
        return FinishReason.EOS_TOKEN
    return _FINISH.get(output.finish_reason, FinishReason.ERROR)


def _logprob(position: Any, token_id: int) -> float | None:
    if not position:
        return None
    entry = position.get(token_id)
    return None if entry is None else float(entry.logprob)


def _top(position: Any, vocab: Any, wanted: int | None) -> list[TopToken] | None:
    if not position or not wanted:
        return None
    ranked = sorted(
        (e for e in position.items() if e[1].rank is not None and e[1].rank <= wanted),
        key=lambda e: e[1].rank,
    )
    return [
        TopToken(tid, vocab.token_text(tid), float(entry.logprob), tid in vocab.special_ids)
        for tid, entry in ranked
    ]


def _final(
    stream: RequestStream,
    index: int,
    reason: FinishReason,
    generated: str,
    delta: str,
    seed: int | None,
    error: str | None = None,
) -> TokenEvent:
    # A last event that carries no token of its own (our engine's form for these cases).
    return TokenEvent(
        index=index + 1,
        id=-1,
        text=delta,
        token_text="",
        logprob=None,
        special=True,
        finish_reason=reason,
        generated_text=generated,
        generated_tokens=index,
        input_length=len(stream.prompt_ids),
        seed=seed,
        error=error,
    )
