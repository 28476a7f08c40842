"""The SSE parser against the WHATWG event-stream interpretation rules."""

from __future__ import annotations

from hypothesis import given, note, settings
from hypothesis import strategies as st

from streamhost.client import ServerSentEvent, SSEParser, aiter_sse, iter_sse
from tests.harness import examples

from .streamwire import split_at


def parse(*chunks: bytes) -> list[ServerSentEvent]:
    return list(iter_sse(chunks))


def test_data_with_one_space_after_the_colon_drops_only_that_space():
    assert parse(b"data:  two spaces\n\n") == [ServerSentEvent(data=" two spaces")]


def test_data_without_a_space_after_the_colon_is_read_whole():
    # TGI <= 2.0 (axum 0.6) writes data:{...} with no space.
    assert parse(b'data:{"a":1}\n\n')[0].data == '{"a":1}'


def test_multiple_data_lines_join_with_newlines():
    assert parse(b"data: one\ndata:\ndata: three\n\n")[0].data == "one\n\nthree"


def test_comment_lines_are_ignored():
    # TGI's keep-alive is the comment ":\n\n".
    assert parse(b":\n\n: keep-alive\ndata: x\n\n") == [ServerSentEvent(data="x")]


def test_a_blank_line_with_no_data_dispatches_nothing():
    assert parse(b"event: ping\n\n\n\n") == []


def test_event_id_and_retry_fields_are_parsed():
    events = parse(b"event: token\nid: 7\nretry: 1500\ndata: x\n\n")
    assert events == [ServerSentEvent(data="x", event="token", id="7", retry=1500)]


def test_last_event_id_persists_across_events():
    events = parse(b"id: 1\ndata: a\n\ndata: b\n\n")
    assert [event.id for event in events] == ["1", "1"]


def test_event_type_resets_to_message_after_dispatch():
    events = parse(b"event: error\ndata: a\n\ndata: b\n\n")
    assert [event.event for event in events] == ["error", "message"]


def test_retry_with_non_digits_is_ignored():
    parser = SSEParser()
    assert parser.feed(b"retry: 10s\ndata: x\n\n")[0].retry is None
    assert parser.reconnection_time is None


def test_id_containing_null_is_ignored():
    assert parse(b"id: a\x00b\ndata: x\n\n")[0].id is None


def test_a_field_line_without_colon_is_a_field_with_empty_value():
    assert parse(b"data\ndata\n\n")[0].data == "\n"


def test_unknown_fields_are_ignored():
    assert parse(b"foo: bar\ndata: x\n\n") == [ServerSentEvent(data="x")]


def test_cr_lf_and_crlf_all_end_lines():
    assert parse(b"data: a\r\rdata: b\n\ndata: c\r\n\r\n") == [
        ServerSentEvent(data="a"),
        ServerSentEvent(data="b"),
        ServerSentEvent(data="c"),
    ]


def test_crlf_split_across_chunks_counts_as_one_line_end():
    # Were the LF counted again it would be a blank line and dispatch early.
    assert parse(b"data: a\r", b"\ndata: b\r\n\r\n") == [ServerSentEvent(data="a\nb")]


def test_leading_byte_order_mark_is_skipped():
    assert parse(b"\xef\xbb\xbfdata: x\n\n") == [ServerSentEvent(data="x")]


def test_multibyte_character_split_across_chunks_is_decoded_whole():
    encoded = "data: 🙂\n\n".encode()
    assert parse(encoded[:8], encoded[8:]) == [ServerSentEvent(data="🙂")]


def test_an_event_without_its_blank_line_at_the_end_is_discarded():
    parser = SSEParser()
    assert parser.feed(b"data: a\n\ndata: unfinished\n") == [ServerSentEvent(data="a")]
    assert parser.close() == []


def test_close_can_dispatch_an_unfinished_event_and_unterminated_line():
    parser = SSEParser()
    assert parser.feed(b"data: a\ndata: b") == []
    assert parser.close(dispatch_pending=True) == [ServerSentEvent(data="a\nb")]


def test_done_sentinel_is_recognised():
    event = parse(b"data: [DONE]\n\n")[0]
    assert event.is_done


def test_ordinary_data_is_not_done():
    assert not parse(b'data: {"text": "[DONE]"}\n\n')[0].is_done


async def test_aiter_sse_parses_an_async_byte_stream():
    async def chunks():
        yield b"data: a\n"
        yield b"\ndata: b\n\n"

    assert [event.data async for event in aiter_sse(chunks())] == ["a", "b"]


field_value = st.text(st.characters(codec="utf-8", exclude_characters="\r\n\x00"), max_size=10)
sse_event = st.fixed_dictionaries(
    {
        "data": st.lists(field_value, min_size=1, max_size=3),
        "event": st.one_of(st.none(), field_value),
        "id": st.one_of(st.none(), field_value),
    }
)


@settings(max_examples=examples(150), deadline=None)
@given(events=st.lists(sse_event, max_size=5), data=st.data())
def test_parser_recovers_events_whatever_the_line_ends_spacing_and_chunking(events, data):
    line_ends = st.sampled_from(["\n", "\r", "\r\n"])

    def field(name: str, value: str) -> str:
        # Without the space is only lossless when the value itself starts with no space.
        spaced = value.startswith(" ") or data.draw(st.booleans())
        return f"{name}:{' ' if spaced else ''}{value}{data.draw(line_ends)}"

    text, expected, last_id = "", [], None
    for event in events:
        if data.draw(st.booleans()):
            text += ": comment\n"
        if event["event"] is not None:
            text += field("event", event["event"])
        if event["id"] is not None:
            text += field("id", event["id"])
            last_id = event["id"]
        for line in event["data"]:
            text += field("data", line)
        blank = data.draw(line_ends)
        # After a bare CR, an LF would complete a CRLF rather than make a blank line.
        text += "\r" if text.endswith("\r") and blank == "\n" else blank
        expected.append(
            ServerSentEvent(
                data="\n".join(event["data"]), event=event["event"] or "message", id=last_id
            )
        )
    body = text.encode()
    note(f"body: {body!r}")
    cuts = data.draw(st.lists(st.integers(0, len(body)), max_size=12))
    assert parse(*split_at(body, cuts)) == expected
