"""Property tests for the payload decoders and error classifiers: whatever JSON a server
sends, they answer with a delta, nothing, or one of this package's `StreamError`s."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from streamhost.client import (
    FORMATS,
    StreamError,
    decoder_for,
    detect_format,
    error_from_payload,
    error_from_response,
)
from tests.harness import examples

KEYS = [
    "token", "text", "id", "logprob", "log_prob", "special", "special_token", "generated_text",
    "details", "finish_reason", "generated_tokens", "outputs", "choices", "delta", "content",
    "index", "usage", "completion_tokens", "error", "error_type", "message", "type", "code",
    "http_status_code", "object",
]  # fmt: skip
# Values at the edges of what JSON can carry and Python converts: integers too large for a
# float, digit strings too long for int(), digits int() does not read.
edges = st.sampled_from(
    [10**400, -(10**400), 2**64, 1e308, "1" * 5000, "²", "٣", "429", "", "stop", "chat.completion"]
)
scalars = st.one_of(
    edges,
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=10),
)
payloads = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=4), inner, max_size=3)
        # Objects made of the members the decoders look for, nested: the shapes they expect,
        # with any value in any member.
        | st.fixed_dictionaries({}, optional=dict.fromkeys(KEYS, inner))
    ),
    max_leaves=25,
)


@settings(max_examples=examples(200))
@given(format=st.sampled_from(sorted(FORMATS)), payload=payloads)
def test_any_payload_decodes_or_raises_a_stream_error(format: str, payload: Any):
    decoder = decoder_for(format)
    try:
        delta = decoder.feed(payload)
    except StreamError:
        return
    assert delta is None or isinstance(delta.text, str)
    decoder.result()


@settings(max_examples=examples(200))
@given(payload=payloads)
def test_error_classification_never_fails(payload: Any):
    error = error_from_payload(payload)
    assert error is None or isinstance(error, StreamError)
    assert detect_format(payload) in (None, *FORMATS)


@settings(max_examples=examples(150))
@given(
    status=st.integers(min_value=100, max_value=599),
    body=st.one_of(st.binary(max_size=200), payloads.map(lambda p: json.dumps(p).encode())),
    aws=st.none() | st.text(max_size=30),
)
def test_any_error_response_becomes_a_stream_error(status: int, body: bytes, aws: str | None):
    assert isinstance(error_from_response(status, body, aws), StreamError)
