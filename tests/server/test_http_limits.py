"""The model server's HTTP protocol (`streamhost.uvicorn_http`), as `streamhost serve-model`
runs it: a request's head over its limits is refused in TGI's error form as it arrives,
without the server buffering what the client sends, and a client too slow to send its
request gets 408 at `--request-timeout`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from streamhost import cli
from streamhost.uvicorn_http import MAX_FIELD_BYTES, MAX_HEADER_BYTES, MAX_HEADER_FIELDS
from tests.harness import MiB, ModelServerProcess, PeakRss, exchange, send_huge_field, slow_clients


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[ModelServerProcess]:
    """`streamhost serve-model` with a synthetic model and a 1 s request timeout."""
    folder = tmp_path_factory.mktemp("limits")
    args = ["--model", "synthetic:1", "--model-dir", str(folder), "--request-timeout", "1"]
    live = ModelServerProcess(folder / "server.log", *args)
    try:
        yield live.wait_ready(120)
    finally:
        live.stop(30)


def still_serving(server: ModelServerProcess) -> bool:
    r = httpx.post(
        server.url + "/generate", json={"inputs": "ok", "parameters": {"max_new_tokens": 2}}
    )
    return r.status_code == 200 and r.json()["generated_text"] == "0 1 "


def tgi_refusal(answer: bytes) -> tuple[int, dict[str, Any]]:
    """(status, JSON body) of an answer that closes its connection."""
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    assert headers["connection"] == "close"
    assert headers["content-type"] == "application/json"
    return int(status_line.split()[1]), json.loads(body)


def test_a_huge_header_field_is_refused_431_without_being_buffered(server):
    with PeakRss(server.process) as rss:
        answer = send_huge_field(server.port, "/ping", 4 * MiB)
    assert tgi_refusal(answer) == (
        431,
        {
            "error": f"The request's header fields exceed {MAX_HEADER_BYTES} bytes.",
            "error_type": "validation",
        },
    )
    # A buffered field would show whole (4 MiB); the worker's own allocations around the
    # request move its RSS by up to ~1 MiB.
    assert rss.growth < 2 * MiB, f"the server grew by {rss.growth / MiB:.1f} MiB"
    assert still_serving(server)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            [b"X-Long: " + b"a" * MAX_FIELD_BYTES],
            f"The request's header field 'x-long' exceeds {MAX_FIELD_BYTES} bytes.",
        ),
        (
            [b"X-%d: a" % i for i in range(MAX_HEADER_FIELDS + 1)],
            f"The request has more than {MAX_HEADER_FIELDS} header fields.",
        ),
        (
            [b"X-%d: %s" % (i, b"a" * (MAX_HEADER_BYTES // 7)) for i in range(8)],
            f"The request's header fields exceed {MAX_HEADER_BYTES} bytes.",
        ),
    ],
    ids=["long-field", "too-many-fields", "too-many-bytes"],
)
def test_header_fields_over_their_limits_are_refused_431(server, fields, message):
    head = b"POST /generate HTTP/1.1\r\nHost: x\r\n" + b"\r\n".join(fields) + b"\r\n\r\n"
    answer = exchange(server.port, head)
    assert tgi_refusal(answer) == (431, {"error": message, "error_type": "validation"})
    assert still_serving(server)


def test_a_url_over_its_limit_is_refused_414(server):
    answer = exchange(server.port, b"GET /ping?" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    status, document = tgi_refusal(answer)
    assert status == 414 and document["error_type"] == "validation"
    assert "URL exceeds" in document["error"]


def test_a_client_too_slow_to_send_its_request_is_answered_408(server):
    body = b'{"inputs": "hello", "parameters": {"max_new_tokens": 2}}'
    request = (
        b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    # Headers, then the body, cut short; and a connection that never sends anything.
    *cut, (seconds, answer) = slow_clients(server.port, [request[:30], request + body[:5], b""])
    assert 0.9 < seconds < 10 and answer == b""
    for seconds, answer in cut:
        assert 0.9 < seconds < 10
        assert tgi_refusal(answer) == (
            408,
            {
                "error": "The request did not arrive whole within 1 seconds.",
                "error_type": "request_timeout",
            },
        )
    assert still_serving(server)


def test_the_request_timeout_must_be_positive(capsys):
    assert cli.main(["serve-model", "--model", "synthetic:1", "--request-timeout", "0"]) == 2
    err = capsys.readouterr().err
    assert err == "streamhost serve-model: --request-timeout must be positive, got 0\n"
