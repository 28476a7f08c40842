"""Hypothesis strategies built from botocore service-model shapes: requests that follow
the model, and requests bent out of it (wrong types, missing members, huge or hostile
values) at any depth."""

from __future__ import annotations

import functools
import string
from typing import Any

from botocore.model import OperationModel, Shape
from hypothesis import strategies as st

from streamhost.gateway.validation import java_pattern, sagemaker_model

# Values no field expects: wrong JSON types, nulls, and sizes far past any limit.
HOSTILE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.just("x" * 100_000),
    st.just("\u202e\ufeff\x00" * 1000),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.just([[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]),
)
_NAME_ALPHABET = string.ascii_letters + string.digits + "-"
_MAX_DEPTH = 6


def request(operation: OperationModel, bent: bool) -> st.SearchStrategy[Any]:
    """A JSON-ready request body for `operation` (bent out of its shape if `bent`)."""
    shape = operation.input_shape
    if shape is None:
        return st.just({})
    return _shape(shape, bent, 0)


def operations() -> list[str]:
    return sorted(sagemaker_model().operation_names)


def operation_model(name: str) -> OperationModel:
    return sagemaker_model().operation_model(name)


def _shape(shape: Shape, bent: bool, depth: int) -> st.SearchStrategy[Any]:
    strategy = _follow(shape, bent, depth)
    if bent:
        # Anywhere in the request, a value may be swapped for something hostile.
        return st.one_of(strategy, strategy, strategy, HOSTILE)
    return strategy


def _follow(shape: Shape, bent: bool, depth: int) -> st.SearchStrategy[Any]:
    kind = shape.type_name
    if kind == "structure":
        return _structure(shape, bent, depth)
    if kind == "list":
        if depth >= _MAX_DEPTH:
            return st.just([])
        low, high = _bounds(shape, 0, 3)
        return st.lists(_shape(shape.member, bent, depth + 1), min_size=low, max_size=min(high, 3))
    if kind == "map":
        if depth >= _MAX_DEPTH:
            return st.just({})
        return st.dictionaries(_string(shape.key), _shape(shape.value, bent, depth + 1), max_size=3)
    if kind == "string":
        return _string(shape)
    if kind in ("integer", "long"):
        low, high = _bounds(shape, -(2**31), 2**31 - 1)
        return st.integers(min_value=low, max_value=high)
    if kind in ("float", "double"):
        low, high = _bounds(shape, -1e9, 1e9)
        return st.floats(min_value=low, max_value=high, allow_nan=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "timestamp":
        return st.one_of(st.integers(min_value=0, max_value=2**33), st.just("2024-01-01T00:00:00Z"))
    if kind == "blob":
        return st.just("aGVsbG8=")
    return HOSTILE


def _structure(shape: Shape, bent: bool, depth: int) -> st.SearchStrategy[Any]:
    if depth >= _MAX_DEPTH:
        return st.just({})
    required = set(shape.required_members)
    members = {name: _shape(member, bent, depth + 1) for name, member in shape.members.items()}
    fixed = {name: members[name] for name in required if name in members}
    optional = {name: s for name, s in members.items() if name not in required}
    strategy = st.fixed_dictionaries(fixed, optional=optional)
    if bent:
        unknown = st.dictionaries(st.text(min_size=1, max_size=10), HOSTILE, max_size=2)
        strategy = st.one_of(
            strategy,
            st.builds(_drop_some, strategy, st.randoms(use_true_random=False)),
            st.builds(lambda a, b: {**a, **b}, strategy, unknown),
        )
    return strategy


def _drop_some(value: dict, rng: Any) -> dict:
    return {k: v for k, v in value.items() if rng.random() < 0.5}


def _string(shape: Shape) -> st.SearchStrategy[str]:
    if shape.enum:
        return st.sampled_from(list(shape.enum))
    low, high = _bounds(shape, 0, 64)
    pattern = shape.metadata.get("pattern")
    compiled = _compiled(pattern) if pattern else None
    if compiled is not None and len(pattern) < 200:
        matching = st.from_regex(compiled, fullmatch=True).filter(lambda s: low <= len(s) <= high)
        return st.one_of(matching, _plain(low, high))
    return _plain(low, high)


def _plain(low: int, high: int) -> st.SearchStrategy[str]:
    return st.text(_NAME_ALPHABET, min_size=low, max_size=max(low, min(high, 40)))


@functools.cache
def _compiled(pattern: str) -> Any:
    return java_pattern(pattern)


def _bounds(shape: Shape, low: Any, high: Any) -> tuple[Any, Any]:
    metadata = shape.metadata
    return metadata.get("min", low), metadata.get("max", high)
