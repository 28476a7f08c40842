"""Test-local encoders for every wire format the client decodes.

Independent of streamhost's own code on purpose: the tests check the decoders against bytes
built from the reference documents, not against an encoder that could share their mistakes.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterable, Sequence
from functools import cache
from itertools import pairwise
from typing import Any

PAYLOAD_PART_HEADERS = {
    ":event-type": "PayloadPart",
    ":content-type": "application/octet-stream",
    ":message-type": "event",
}


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message: prelude, prelude CRC, type-7 string headers, payload, CRC."""
    encoded_headers = b""
    for name, value in headers.items():
        raw_name, raw_value = name.encode(), value.encode()
        encoded_headers += bytes([len(raw_name)]) + raw_name + b"\x07"
        encoded_headers += struct.pack(">H", len(raw_value)) + raw_value
    total = 12 + len(encoded_headers) + len(payload) + 4
    prelude = struct.pack(">II", total, len(encoded_headers))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + encoded_headers + payload
    return message + struct.pack(">I", zlib.crc32(message))


def payload_part(payload: bytes) -> bytes:
    """A ``PayloadPart`` event message."""
    return encode_message(PAYLOAD_PART_HEADERS, payload)


def exception_message(exception_type: str, body: dict[str, Any]) -> bytes:
    """A ``ModelStreamError``/``InternalStreamFailure`` exception message."""
    headers = {
        ":exception-type": exception_type,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return encode_message(headers, json.dumps(body).encode())


def frames(payload: bytes, cuts: Iterable[int]) -> bytes:
    """``payload`` carried in PayloadPart messages split at ``cuts``."""
    return b"".join(payload_part(part) for part in split_at(payload, cuts) if part)


def split_at(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    """``data`` cut at the given offsets (any order, duplicates allowed)."""
    points = [0, *sorted(min(max(cut, 0), len(data)) for cut in cuts), len(data)]
    return [data[start:end] for start, end in pairwise(points)]


def dumps(obj: Any) -> str:
    """JSON as TGI/serde writes it: compact, raw UTF-8."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def tgi_sse(tokens: Sequence[str], *, space: bool = True, details: bool = True) -> bytes:
    """TGI ``/generate_stream``: token events, the last with generated_text and details, EOS."""
    prefix = "data: " if space else "data:"
    events = []
    for index, text in enumerate([*tokens, "</s>"], start=1):
        last = index == len(tokens) + 1
        event = {
            "index": index,
            "token": {"id": index, "text": text, "logprob": -0.5, "special": last},
            "generated_text": "".join(tokens) if last else None,
            "details": {"finish_reason": "eos_token", "generated_tokens": index, "seed": None}
            if last and details
            else None,
        }
        events.append(f"{prefix}{dumps(event)}\n\n")
    return "".join(events).encode()


def openai_chat_sse(tokens: Sequence[str]) -> bytes:
    """OpenAI chat completion chunks, a usage chunk and ``[DONE]``."""
    events = []
    for text in tokens:
        choice = {"index": 0, "delta": {"role": "assistant", "content": text}}
        events.append({"object": "chat.completion.chunk", "choices": [choice]})
    final = {"index": 0, "delta": {}, "finish_reason": "stop"}
    events.append({"object": "chat.completion.chunk", "choices": [final]})
    usage = {"prompt_tokens": 3, "completion_tokens": len(tokens), "total_tokens": 3 + len(tokens)}
    events.append({"object": "chat.completion.chunk", "choices": [], "usage": usage})
    body = "".join(f"data: {dumps(event)}\n\n" for event in events)
    return (body + "data: [DONE]\n\n").encode()


def openai_completion_sse(tokens: Sequence[str]) -> bytes:
    """OpenAI legacy completion chunks and ``[DONE]``."""
    events = [
        {"object": "text_completion", "choices": [{"index": 0, "text": text}]} for text in tokens
    ]
    events.append(
        {
            "object": "text_completion",
            "choices": [{"index": 0, "text": "", "finish_reason": "length"}],
        }
    )
    body = "".join(f"data: {dumps(event)}\n\n" for event in events)
    return (body + "data: [DONE]\n\n").encode()


def lmi_outputs_lines(tokens: Sequence[str]) -> bytes:
    """LMI 0.23 rolling batch: ``json.dumps({"outputs": [token]}) + "\\n"``, then EOS as ``""``."""
    return "".join(json.dumps({"outputs": [text]}) + "\n" for text in [*tokens, ""]).encode()


def lmi_token_lines(tokens: Sequence[str]) -> bytes:
    """LMI 0.26+ jsonlines: token objects, the last with generated_text and details."""
    lines = []
    for index, text in enumerate(tokens):
        line: dict[str, Any] = {"token": {"id": index, "text": text, "log_prob": -0.1}}
        if index == len(tokens) - 1:
            line["generated_text"] = "".join(tokens)
            line["details"] = {"finish_reason": "length", "generated_tokens": len(tokens)}
        lines.append(json.dumps(line, ensure_ascii=False) + "\n")
    return "".join(lines).encode()


def lmi_sse(tokens: Sequence[str]) -> bytes:
    """LMI 0.28+ ``output_formatter=sse``: each token line as ``data: {jsonline}\\n\\n``."""
    # split, not splitlines: raw U+2028 inside the JSON is not a line end.
    lines = lmi_token_lines(tokens).decode().split("\n")[:-1]
    return "".join(f"data: {line}\n\n" for line in lines).encode()


def lmi_json_object(tokens: Sequence[str]) -> bytes:
    """LMI 0.23 default ``json`` formatter: one object in pieces, ASCII-escaped, no newline."""
    pieces = [json.dumps(text)[1:-1] for text in tokens]
    return ('{"generated_text": "' + "".join(pieces) + '"}').encode()


WIRE_FORMATS = {
    # name: (encoder, content type)
    "tgi": (tgi_sse, "text/event-stream"),
    "tgi-nospace": (lambda tokens: tgi_sse(tokens, space=False), "text/event-stream"),
    "openai-chat": (openai_chat_sse, "text/event-stream"),
    "openai-completion": (openai_completion_sse, "text/event-stream"),
    "lmi": (lmi_outputs_lines, "application/jsonlines"),
    "lmi-token": (lmi_token_lines, "application/jsonlines"),
    "lmi-sse": (lmi_sse, "text/event-stream"),
    "lmi-json": (lmi_json_object, "application/json"),
}


class RawStream:
    """The one method botocore's ``EventStream`` needs from an HTTP body: ``stream()``."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = list(chunks)
        self.closed = False

    def stream(self) -> Iterable[bytes]:
        yield from self._chunks

    def close(self) -> None:
        self.closed = True


@cache
def _runtime_model() -> tuple[Any, Any]:
    import botocore.parsers
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker-runtime")
    operation = model.operation_model("InvokeEndpointWithResponseStream")
    return operation, botocore.parsers.create_parser(model.metadata["protocol"])


def boto3_response(chunks: Iterable[bytes], content_type: str) -> dict[str, Any]:
    """What ``invoke_endpoint_with_response_stream`` returns, parsed by botocore from raw bytes."""
    from botocore.awsrequest import HeadersDict

    operation, parser = _runtime_model()
    headers = HeadersDict(
        {
            "Content-Type": "application/vnd.amazon.eventstream",
            "X-Amzn-SageMaker-Content-Type": content_type,
        }
    )
    raw = {
        "status_code": 200,
        "headers": headers,
        "body": RawStream(chunks),
        "context": {"operation_name": operation.name},
    }
    return parser.parse(raw, operation.output_shape)
