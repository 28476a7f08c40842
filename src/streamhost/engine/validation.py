"""Request validation with TGI's messages, run before anything is queued.

The order of the checks follows TGI's ``Validation::validate`` so the first error a client
sees is the one TGI would have reported.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from streamhost.engine.config import EngineConfig
from streamhost.engine.types import SamplingParams, ValidationError

MAX_SEED = 2**64 - 1


def _finite(name: str, value: float | None) -> None:
    if value is not None and (not isinstance(value, (int, float)) or not math.isfinite(value)):
        raise ValidationError(f"`{name}` must be a finite number")


def validate_params(params: SamplingParams, config: EngineConfig) -> None:
    """Check everything about ``params`` that does not depend on the prompt."""
    for name in (
        "temperature",
        "top_p",
        "typical_p",
        "repetition_penalty",
        "frequency_penalty",
        "presence_penalty",
    ):
        _finite(name, getattr(params, name))
    best_of = params.best_of
    if best_of is not None and best_of > 1:
        if config.max_best_of <= 1:
            raise ValidationError("`best_of` != 1 is not allowed for this endpoint")
        if not params.do_sample:
            raise ValidationError("you must use sampling when `best_of` is > 1")
        if best_of > config.max_best_of:
            raise ValidationError(
                f"`best_of` must be > 0 and <= {config.max_best_of}. Given: {best_of}"
            )
    elif best_of is not None and best_of < 1:
        raise ValidationError(
            f"`best_of` must be > 0 and <= {config.max_best_of}. Given: {best_of}"
        )
    if params.temperature is not None and params.temperature <= 0:
        raise ValidationError("`temperature` must be strictly positive")
    if params.repetition_penalty is not None and params.repetition_penalty <= 0:
        raise ValidationError("`repetition_penalty` must be strictly positive")
    if params.frequency_penalty is not None and not -2.0 <= params.frequency_penalty <= 2.0:
        raise ValidationError("`frequency_penalty` must be >= -2.0 and <= 2.0")
    if params.presence_penalty is not None and not -2.0 <= params.presence_penalty <= 2.0:
        raise ValidationError("`presence_penalty` must be >= -2.0 and <= 2.0")
    # Unlike TGI we accept top_p == 1.0 (no filtering): rejecting it is TGI's most
    # reported OpenAI-compatibility complaint (issue #2222).
    if params.top_p is not None and not 0.0 < params.top_p <= 1.0:
        raise ValidationError("`top_p` must be > 0.0 and < 1.0")
    if params.typical_p is not None and not 0.0 < params.typical_p <= 1.0:
        raise ValidationError("`typical_p` must be > 0.0 and < 1.0")
    if params.top_k is not None and params.top_k <= 0:
        raise ValidationError("`top_k` must be strictly positive")
    if params.max_new_tokens is not None and params.max_new_tokens <= 0:
        raise ValidationError("`max_new_tokens` must be strictly positive")
    if len(params.stop) > config.max_stop_sequences:
        raise ValidationError(
            f"`stop` supports up to {config.max_stop_sequences} stop sequences. "
            f"Given: {len(params.stop)}"
        )
    if any(not isinstance(s, str) or s == "" for s in params.stop):
        raise ValidationError("`stop` sequences must be non-empty strings")
    if params.seed is not None:
        if best_of is not None and best_of > 1:
            raise ValidationError("`seed` must not be set when `best_of` > 1")
        if not 0 <= params.seed <= MAX_SEED:
            raise ValidationError("`seed` must be >= 0 and < 2^64")
    if not 0 <= params.top_n_tokens <= config.max_top_n_tokens:
        raise ValidationError(
            f"`top_n_tokens` must be >= 0 and <= {config.max_top_n_tokens}. "
            f"Given: {params.top_n_tokens}"
        )


def validate_inputs(text: str | None, ids: list[int] | None) -> None:
    """Reject an empty prompt."""
    if (text is not None and text == "") or (text is None and not ids):
        raise ValidationError("`inputs` cannot be empty")


def validate_token_ids(ids: list[int], token_count: int | None) -> None:
    """Reject a prompt of token ids the model has no embedding for."""
    for position, token in enumerate(ids):
        if (
            not isinstance(token, int)
            or isinstance(token, bool)
            or token < 0
            or (token_count is not None and token >= token_count)
        ):
            limit = f"[0, {token_count})" if token_count is not None else "non-negative"
            raise ValidationError(
                f"`inputs` token ids must be integers in {limit}; got {token!r} at "
                f"position {position}"
            )


def validate_truncate(params: SamplingParams, config: EngineConfig) -> None:
    """Check ``truncate`` against the input limit."""
    max_input = config.max_input_tokens or 0
    if params.truncate is not None and not 0 < params.truncate <= max_input:
        raise ValidationError(
            f"`truncate` must be strictly positive and less than {max_input}. "
            f"Given: {params.truncate}"
        )


def resolve_lengths(input_length: int, params: SamplingParams, config: EngineConfig) -> int:
    """Check the prompt length against the limits and return ``max_new_tokens`` to use."""
    assert config.max_total_tokens is not None and config.max_input_tokens is not None
    max_new = params.max_new_tokens
    if max_new is None:
        max_new = min(config.default_max_new_tokens, config.max_total_tokens - input_length)
        max_new = max(max_new, 1)
    if input_length + max_new > config.max_total_tokens:
        raise ValidationError(
            f"`inputs` tokens + `max_new_tokens` must be <= {config.max_total_tokens}. "
            f"Given: {input_length} `inputs` tokens and {max_new} `max_new_tokens`"
        )
    if input_length > config.max_input_tokens:
        raise ValidationError(
            f"`inputs` must have less than {config.max_input_tokens} tokens. Given: {input_length}"
        )
    return max_new


def prepare_request(
    prompt: str | list[int],
    params: SamplingParams,
    config: EngineConfig,
    encode: Callable[[str], list[int]],
    token_count: int | None,
) -> tuple[list[int], int]:
    """Everything a request can be refused for, before it is queued (every engine's one
    path): the parameters, the prompt (text through ``encode``, or token ids), truncation
    and the length limits. Returns the prompt's token ids and ``max_new_tokens`` to use."""
    validate_params(params, config)
    if isinstance(prompt, str):
        validate_inputs(prompt, None)
        validate_truncate(params, config)
        ids = encode(prompt)
    else:
        validate_inputs(None, prompt)
        validate_truncate(params, config)
        ids = list(prompt)
        validate_token_ids(ids, token_count)
    if params.truncate is not None and len(ids) > params.truncate:
        ids = ids[-params.truncate :]
    return ids, resolve_lengths(len(ids), params, config)
