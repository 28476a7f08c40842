"""The stream's wire framing: every chunk the instance sends is one PayloadPart in its own
HTTP chunk, also when the client fell behind and chunks piled up in the gateway."""

from __future__ import annotations

import json
import socket
import time

import pytest
from botocore.eventstream import EventStreamBuffer

from tests.harness import create_synthetic_endpoint, signed_headers, tgi_body

TOKENS = 400


def http_chunks(raw: bytes) -> list[bytes]:
    """The chunks of a chunked HTTP/1.1 response, as the server framed them."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    chunks = []
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return chunks
        chunks.append(rest[:size])
        assert rest[size : size + 2] == b"\r\n"
        rest = rest[size + 2 :]


def one_message(chunk: bytes):
    """The single event-stream message `chunk` holds, decoded (CRCs checked) by botocore."""
    assert int.from_bytes(chunk[:4], "big") == len(chunk), "not exactly one message"
    buffer = EventStreamBuffer()
    buffer.add_data(chunk)
    (message,) = list(buffer)
    return message


def read_late(gateway, endpoint: str, tokens: int, pause: float) -> list:
    """Stream `tokens` tokens from `endpoint` over a socket with a small receive buffer that
    starts reading only after `pause` seconds; the event-stream messages, one per HTTP chunk
    (each checked to be exactly one message)."""
    url = f"{gateway.url}/endpoints/{endpoint}/invocations-response-stream"
    body = tgi_body(tokens=tokens)
    headers = signed_headers(url, body, {"Content-Type": "application/json"})
    host, port = gateway.url.removeprefix("http://").split(":")
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((host, int(port)))
        head = f"POST /endpoints/{endpoint}/invocations-response-stream HTTP/1.1\r\n"
        head += f"Host: {host}:{port}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items() if k.lower() != "host")
        sock.sendall(head.encode() + b"Connection: close\r\n\r\n" + body)
        time.sleep(pause)
        raw = b""
        sock.settimeout(30)
        while data := sock.recv(65536):
            raw += data
    return [one_message(chunk) for chunk in http_chunks(raw)]


def test_each_payload_part_is_its_own_http_chunk_even_after_a_pause(gateway):
    # The instance runs ahead of a client that pauses, its chunks wait in the gateway, and
    # the relay takes several at a time.
    create_synthetic_endpoint(gateway.sm(), "framing", delay_ms=0)
    events = read_late(gateway, "framing", TOKENS, pause=1.0)
    assert all(event.headers[":event-type"] == "PayloadPart" for event in events)
    assert b"".join(event.payload for event in events).count(b"data:") == TOKENS


@pytest.mark.slow
def test_a_client_reading_slower_than_the_instance_gets_every_token_in_order(gateway):
    # Enough bytes to fill the client's socket and the gateway's write buffer: the relay's
    # writes then wait for the client (some from the instance connection's callback, handed
    # to the relay's task), and every token must still arrive once, in order, one
    # PayloadPart per HTTP chunk.
    tokens = 20_000
    create_synthetic_endpoint(
        gateway.sm(),
        "slowread",
        environment={"HF_MODEL_ID": "synthetic:0", "MAX_TOTAL_TOKENS": str(tokens + 16)},
    )
    events = read_late(gateway, "slowread", tokens, pause=1.5)
    assert all(event.headers[":event-type"] == "PayloadPart" for event in events)
    lines = b"".join(event.payload for event in events).split(b"\n\n")
    indexes = [json.loads(line[len(b"data:") :])["index"] for line in lines if line]
    assert indexes == list(range(1, tokens + 1))
