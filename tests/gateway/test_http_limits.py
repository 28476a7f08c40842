"""The gateway's limits on a request's head (`streamhost.uvicorn_http`): a URL, a header
field, too many fields or too many bytes of them are refused in AWS's error form, as they
arrive, without the gateway buffering what the client sends; requests within the limits
are served as before. And the start-up check of the uvicorn internals the protocol uses."""

from __future__ import annotations

import json
import select
import socket
from typing import Any

import psutil
import pytest
from uvicorn.protocols.http import flow_control, httptools_impl

from streamhost import cli
from streamhost.uvicorn_http import (
    MAX_FIELD_BYTES,
    MAX_HEADER_BYTES,
    MAX_HEADER_FIELDS,
    MAX_URL_BYTES,
    UvicornMismatch,
    check_uvicorn,
)
from tests.harness import MiB, PeakRss, exchange, read_until_closed, send_huge_field


def aws_error(answer: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    """(status, headers, JSON body) of an answer that closes its connection."""
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    assert headers["connection"] == "close"
    assert int(headers["content-length"]) == len(body)
    return int(status_line.split()[1]), headers, json.loads(body)


def assert_refused(answer: bytes, status: int, code: str, message: str) -> None:
    got, headers, document = aws_error(answer)
    assert got == status
    assert headers["x-amzn-errortype"] == code
    assert headers["x-amzn-requestid"]
    assert document == {"__type": code, "message": message}


def test_a_huge_header_field_is_refused_431_without_being_buffered(gateway):
    with PeakRss(psutil.Process()) as rss:  # the gateway serves on a thread of this process
        answer = send_huge_field(gateway.settings.port, "/ping", 4 * MiB)
    assert_refused(
        answer,
        431,
        "RequestHeaderFieldsTooLargeException",
        f"The request's header fields exceed {MAX_HEADER_BYTES} bytes.",
    )
    # A buffered field would show whole (4 MiB); the worker's own allocations around the
    # request move its RSS by up to ~1 MiB.
    assert rss.growth < 2 * MiB, f"the gateway grew by {rss.growth / MiB:.1f} MiB"
    assert gateway.sm().list_endpoints()["Endpoints"] == []  # and it goes on serving


def test_a_header_field_over_its_limit_is_refused_431(gateway):
    field = b"X-Long: " + b"a" * MAX_FIELD_BYTES + b"\r\n"
    answer = exchange(gateway.settings.port, b"GET /ping HTTP/1.1\r\nHost: x\r\n" + field + b"\r\n")
    assert_refused(
        answer,
        431,
        "RequestHeaderFieldsTooLargeException",
        f"The request's header field 'x-long' exceeds {MAX_FIELD_BYTES} bytes.",
    )


@pytest.mark.parametrize(
    ("count", "size", "message"),
    [
        (
            MAX_HEADER_FIELDS + 1,
            10,
            f"The request has more than {MAX_HEADER_FIELDS} header fields.",
        ),
        (8, MAX_HEADER_BYTES // 7, f"The request's header fields exceed {MAX_HEADER_BYTES} bytes."),
    ],
    ids=["too-many-fields", "too-many-bytes"],
)
def test_many_header_fields_are_refused_431(gateway, count, size, message):
    fields = b"".join(b"X-%d: %s\r\n" % (i, b"a" * size) for i in range(count))
    answer = exchange(
        gateway.settings.port, b"GET /ping HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n"
    )
    assert_refused(answer, 431, "RequestHeaderFieldsTooLargeException", message)


def test_a_url_over_its_limit_is_refused_414(gateway):
    path = b"/endpoints/" + b"a" * MAX_URL_BYTES + b"/invocations"
    answer = exchange(gateway.settings.port, b"POST " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert_refused(
        answer,
        414,
        "RequestURITooLongException",
        f"The request's URL exceeds {MAX_URL_BYTES} bytes.",
    )


def test_a_head_sent_slowly_is_refused_once_over_its_limit(gateway):
    # One header field a read at a time: the head never ends, and is refused at the field
    # that takes it over 64 KiB, not when the client stops.
    with socket.create_connection(("127.0.0.1", gateway.settings.port), timeout=20) as sock:
        sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n")
        sent = 0
        while not select.select([sock], [], [], 0.02)[0]:
            sock.sendall(b"X-%d: %s\r\n" % (sent, b"a" * 8000))
            sent += 1
        answer = read_until_closed(sock)
    assert sent * 8000 <= MAX_HEADER_BYTES + 16000
    assert aws_error(answer)[0] == 431


def test_requests_within_the_limits_are_served(gateway):
    sm = gateway.sm()
    assert sm.list_endpoints()["Endpoints"] == []  # an ordinary boto3 request
    fields = b"".join(
        b"X-%d: %s\r\n" % (i, b"a" * (MAX_FIELD_BYTES - 8))
        for i in range(MAX_HEADER_BYTES // MAX_FIELD_BYTES - 1)
    )
    fields += b"".join(b"X-Small-%d: a\r\n" % i for i in range(MAX_HEADER_FIELDS - 10))
    path = b"/ping?" + b"a" * (MAX_URL_BYTES - 100)
    request = b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + fields + b"\r\n"
    answer = exchange(gateway.settings.port, request)
    assert answer.startswith(b"HTTP/1.1 200 ")


# -- the start-up check of uvicorn --------------------------------------------------------


def test_the_uvicorn_installed_has_what_the_protocol_uses():
    assert check_uvicorn() is httptools_impl.HttpToolsProtocol


@pytest.mark.parametrize(
    ("patch", "missing"),
    [
        (
            lambda mp: mp.delattr(httptools_impl.HttpToolsProtocol, "send_400_response"),
            "HttpToolsProtocol.send_400_response",
        ),
        (
            lambda mp: mp.setattr(httptools_impl.HttpToolsProtocol, "on_message_begin", len),
            "HttpToolsProtocol.url",
        ),
        (
            lambda mp: mp.setattr(flow_control.FlowControl, "__init__", lambda self, t: None),
            "FlowControl.read_paused",
        ),
        (
            lambda mp: mp.setattr(httptools_impl.RequestResponseCycle, "send", lambda s, m: None),
            "RequestResponseCycle.send as a coroutine function",
        ),
        (
            lambda mp: mp.delattr(httptools_impl, "RequestResponseCycle"),
            "RequestResponseCycle",
        ),
    ],
    ids=["method", "attribute", "flow-control", "send", "class"],
)
def test_the_start_up_check_names_what_uvicorn_lacks(monkeypatch, patch, missing):
    patch(monkeypatch)
    with pytest.raises(UvicornMismatch) as raised:
        check_uvicorn()
    message = str(raised.value)
    assert "\n" not in message
    assert f"lacks {missing}," in message


@pytest.mark.parametrize(
    "argv",
    [
        ["gateway", "--no-auth", "--port", "0", "--state", "{tmp}/g.db"],
        ["serve-model", "--model", "synthetic:1", "--port", "0", "--model-dir", "{tmp}"],
    ],
    ids=["gateway", "serve-model"],
)
def test_a_server_on_a_uvicorn_without_what_it_uses_fails_in_one_line(
    monkeypatch, tmp_path, capsys, argv
):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delattr(httptools_impl.HttpToolsProtocol, "send_400_response")
    assert cli.main([arg.format(tmp=tmp_path) for arg in argv]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"streamhost {argv[0]}: uvicorn ")
    assert "lacks HttpToolsProtocol.send_400_response" in err
