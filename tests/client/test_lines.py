"""LineIterator (the blog sample's interface, without its bugs) and the generic line splitter."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamhost.client import (
    InternalStreamFailure,
    LineIterator,
    LineSplitter,
    ModelStreamError,
    aiter_lines,
    iter_lines,
)
from tests.harness import examples

from .streamwire import split_at


def events(*chunks: bytes) -> list[dict]:
    return [{"PayloadPart": {"Bytes": chunk}} for chunk in chunks]


def test_line_iterator_yields_newline_terminated_lines_without_the_newline():
    stream = events(b'{"outputs": [" a"]}\n{"outputs": [" b"]}\n')
    assert list(LineIterator(stream)) == [b'{"outputs": [" a"]}', b'{"outputs": [" b"]}']


def test_line_iterator_joins_a_json_object_split_across_payload_parts():
    # The example from the sample notebook's docstring.
    stream = events(b'{"outputs": ', b'[" problem"]}\n')
    assert list(LineIterator(stream)) == [b'{"outputs": [" problem"]}']


def test_line_iterator_keeps_a_multibyte_character_split_across_parts_intact():
    encoded = '{"outputs": ["日本"]}\n'.encode()
    stream = events(encoded[:15], encoded[15:])
    assert [line.decode() for line in LineIterator(stream)] == ['{"outputs": ["日本"]}']


def test_line_iterator_yields_blank_lines_as_empty_bytes_like_the_original():
    # The TGI sample skips b"" itself; the original class handed those lines through.
    assert list(LineIterator(events(b"data: {}\n\ndata: {}\n\n"))) == [
        b"data: {}",
        b"",
        b"data: {}",
        b"",
    ]


def test_line_iterator_yields_a_last_line_without_trailing_newline_and_stops():
    # The original looped forever here (sagemaker-python-sdk#6278).
    stream = events(b'{"generated_text": "', b'Hello"}')
    assert list(LineIterator(stream)) == [b'{"generated_text": "Hello"}']


def test_line_iterator_skips_unknown_events_without_type_error(caplog):
    # The original did print("Unknown event type:" + chunk), a str + dict TypeError.
    stream = [{"SomethingElse": {"x": 1}}, *events(b"a\n"), {"Other": {}}, *events(b"b\n")]
    with caplog.at_level(logging.WARNING, logger="streamhost.client"):
        assert list(LineIterator(stream)) == [b"a", b"b"]
    assert "SomethingElse" in caplog.text


def test_line_iterator_strips_carriage_return_of_crlf_lines():
    assert list(LineIterator(events(b"a\r\nb\r", b"\nc"))) == [b"a", b"b", b"c"]


def test_line_iterator_supports_next_like_the_original():
    lines = LineIterator(events(b"one\ntwo\n"))
    assert iter(lines) is lines
    assert next(lines) == b"one"
    assert next(lines) == b"two"
    with pytest.raises(StopIteration):
        next(lines)


def test_line_iterator_raises_model_stream_error_for_an_error_event():
    stream = [
        *events(b"a\n"),
        {"ModelStreamError": {"Message": "gone", "ErrorCode": "StreamBroken"}},
    ]
    lines = LineIterator(stream)
    assert next(lines) == b"a"
    with pytest.raises(ModelStreamError) as caught:
        next(lines)
    assert caught.value.error_code == "StreamBroken"


def test_line_iterator_raises_internal_stream_failure_for_a_failure_event():
    with pytest.raises(InternalStreamFailure, match="oops"):
        list(LineIterator([{"InternalStreamFailure": {"Message": "oops"}}]))


def test_line_splitter_holds_a_partial_line_until_its_newline_arrives():
    splitter = LineSplitter()
    assert splitter.feed(b"par") == []
    assert splitter.feed(b"tial\nnext") == [b"partial"]
    assert splitter.close() == [b"next"]


def test_line_splitter_close_returns_nothing_after_a_final_newline():
    splitter = LineSplitter()
    assert splitter.feed(b"x\n") == [b"x"]
    assert splitter.close() == []


def test_iter_lines_splits_byte_chunks_of_an_http_body():
    assert list(iter_lines([b"a\nb", b"b\n", b"c"])) == [b"a", b"bb", b"c"]


async def test_aiter_lines_splits_an_async_byte_stream():
    async def chunks():
        for chunk in (b"x\r\n", b"y", b"\nz"):
            yield chunk

    assert [line async for line in aiter_lines(chunks())] == [b"x", b"y", b"z"]


line_text = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=12)


@settings(max_examples=examples(150), deadline=None)
@given(
    lines=st.lists(line_text, max_size=8),
    crlf=st.booleans(),
    trailing_newline=st.booleans(),
    data=st.data(),
)
def test_line_iterator_returns_the_same_lines_however_parts_split_the_bytes(
    lines, crlf, trailing_newline, data
):
    eol = b"\r\n" if crlf else b"\n"
    body = b"".join(line.encode() + eol for line in lines)
    if lines and lines[-1] and not trailing_newline:
        body = body[: -len(eol)]
    cuts = data.draw(st.lists(st.integers(0, len(body)), max_size=10))
    stream = []
    for part in split_at(body, cuts):
        stream += events(part)
        if data.draw(st.booleans()):
            stream.append({"UnknownEvent": {}})
    assert list(LineIterator(stream)) == [line.encode() for line in lines]
