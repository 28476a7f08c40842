"""The stream route over HTTP/1.1 as clients other than boto3 use it, on a warm instance
connection: `Expect: 100-continue`, chunked request bodies, pipelined requests, clients that
leave before their body ends or mid-stream, and the usual AWS errors between streams; and
clients too slow to send their request (the gateway's request deadline)."""

from __future__ import annotations

import http.client
import json
import socket
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.harness import (
    client,
    create_synthetic_endpoint,
    delete_endpoint,
    error_of,
    payload_bytes,
    running_gateway,
    signed_headers,
    slow_clients,
    tgi_body,
    wait_for,
)

STREAM_PATH = "/endpoints/warm/invocations-response-stream"


@pytest.fixture(scope="module")
def warm(module_gateway):
    """An endpoint with one stream served, so its instance connection sits in the pool;
    each test leaves it so (one idle connection, nothing outstanding)."""
    gateway = module_gateway
    create_synthetic_endpoint(gateway.sm(), "warm")
    resp = gateway.smr().invoke_endpoint_with_response_stream(EndpointName="warm", Body=tgi_body())
    assert b"generated_text" in payload_bytes(resp)
    yield gateway
    delete_endpoint(gateway.sm(), "warm")


def outstanding(gateway) -> list[int]:
    return [i.outstanding for v in gateway.app.router.variants("warm") for i in v.instances]


def connections(gateway) -> dict[str, int]:
    """The gateway's open and idle connections to instances."""
    return gateway.app.runtime.connections()


def raw_request(gateway, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    """A signed stream invocation as bytes on the wire, headers as given (Content-Length
    is dropped when a Transfer-Encoding is given)."""
    signed = signed_headers(
        gateway.url + STREAM_PATH, body, {"Content-Type": "application/json", **(headers or {})}
    )
    if "Transfer-Encoding" in signed:
        signed.pop("Content-Length", None)
    else:
        signed["Content-Length"] = str(len(body))
    host = gateway.url.removeprefix("http://")
    lines = [f"POST {STREAM_PATH} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in signed.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class _Unclosed:
    """A file that `http.client` cannot close: the next response is read from it too."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def close(self) -> None:
        pass


def read_response(stream: Any) -> tuple[int, dict[str, str], bytes]:
    """One HTTP response from a socket's file (leaving what follows it unread)."""

    class _Socket:
        def makefile(self, *args: Any, **kwargs: Any) -> Any:
            return _Unclosed(stream)

    response = http.client.HTTPResponse(_Socket())  # type: ignore[arg-type]
    response.begin()
    return response.status, dict(response.getheaders()), response.read()


def test_streams_on_a_warm_connection_reuse_it_and_answer_alike(warm):
    smr = warm.smr()
    answers = []
    for _ in range(2):  # one after the other: each finds the connection back in the pool
        resp = smr.invoke_endpoint_with_response_stream(
            EndpointName="warm", Body=tgi_body(tokens=8), CustomAttributes="trace=1"
        )
        answers.append((resp, payload_bytes(resp)))
        assert connections(warm) == {"open": 1, "idle": 1}
    (first, first_bytes), (second, second_bytes) = answers
    assert first_bytes == second_bytes
    assert b'"generated_text":"hello0 1 2 3 4 5 6 7 "' in second_bytes
    for resp in (first, second):
        assert resp["ContentType"].startswith("text/event-stream")
        assert resp["InvokedProductionVariant"] == "AllTraffic"
    ids = {r["ResponseMetadata"]["RequestId"] for r in (first, second)}
    assert len(ids) == 2
    assert outstanding(warm) == [0]


def test_errors_on_a_warm_connection_are_the_usual_aws_errors(warm):
    smr = warm.smr()
    with pytest.raises(ClientError) as raised:  # the container refuses the body
        smr.invoke_endpoint_with_response_stream(EndpointName="warm", Body=b"[1, 2]")
    assert error_of(raised)[:2] == (424, "ModelError")
    assert 400 <= raised.value.response["OriginalStatusCode"] < 500
    with pytest.raises(ClientError) as raised:
        smr.invoke_endpoint_with_response_stream(EndpointName="nope", Body=tgi_body())
    assert error_of(raised)[:2] == (400, "ValidationError")
    with pytest.raises(ClientError) as raised:
        client("sagemaker-runtime", warm.url, secret="wrong").invoke_endpoint_with_response_stream(
            EndpointName="warm", Body=tgi_body()
        )
    assert error_of(raised)[:2] == (403, "InvalidSignatureException")
    with pytest.raises(ClientError) as raised:
        smr.invoke_endpoint_with_response_stream(
            EndpointName="warm", Body=tgi_body(), SessionId="not a session"
        )
    assert error_of(raised)[:2] == (400, "ValidationError")
    with pytest.raises(ClientError) as raised:
        smr.invoke_endpoint_with_response_stream(
            EndpointName="warm", Body=tgi_body(), CustomAttributes="x" * 1025
        )
    assert error_of(raised)[:2] == (400, "ValidationError")
    assert outstanding(warm) == [0]
    resp = smr.invoke_endpoint_with_response_stream(EndpointName="warm", Body=tgi_body())
    assert b"generated_text" in payload_bytes(resp)


def test_expect_100_continue_and_chunked_bodies_are_served(warm):
    body = tgi_body(tokens=3)
    with socket.create_connection(("127.0.0.1", warm.settings.port), timeout=30) as sock:
        stream = sock.makefile("rb")
        sock.sendall(raw_request(warm, body, {"Expect": "100-continue"}))
        assert stream.readline() == b"HTTP/1.1 100 Continue\r\n"
        assert stream.readline() == b"\r\n"
        sock.sendall(body)
        status, _, answer = read_response(stream)
        assert status == 200 and b'"generated_text":"hello0 1 2 "' in answer
        half = len(body) // 2
        sock.sendall(raw_request(warm, body, {"Transfer-Encoding": "chunked"}))
        for piece in (body[:half], body[half:]):
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        sock.sendall(b"0\r\n\r\n")
        status, _, answer = read_response(stream)
        assert status == 200 and b'"generated_text":"hello0 1 2 "' in answer


def test_pipelined_stream_requests_are_answered_in_order(warm):
    one, two = tgi_body("one", tokens=2), tgi_body("two", tokens=3)
    with socket.create_connection(("127.0.0.1", warm.settings.port), timeout=30) as sock:
        sock.sendall(raw_request(warm, one) + one + raw_request(warm, two) + two)
        stream = sock.makefile("rb")
        first, second = read_response(stream), read_response(stream)
    assert first[0] == second[0] == 200
    assert b'"generated_text":"one0 1 "' in first[2]
    assert b'"generated_text":"two0 1 2 "' in second[2]
    assert first[1]["x-amzn-requestid"] != second[1]["x-amzn-requestid"]


def test_a_client_gone_before_its_body_ends_leaves_nothing_behind(warm):
    body = tgi_body()
    with socket.create_connection(("127.0.0.1", warm.settings.port), timeout=30) as sock:
        sock.sendall(raw_request(warm, body) + body[:5])
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(1024) == b""  # the gateway closes without an answer
    assert outstanding(warm) == [0]
    assert connections(warm) == {"open": 1, "idle": 1}  # nothing was sent to the instance
    resp = warm.smr().invoke_endpoint_with_response_stream(EndpointName="warm", Body=tgi_body())
    assert b"generated_text" in payload_bytes(resp)


def test_a_client_gone_mid_stream_frees_its_instance_and_connection(warm):
    body = tgi_body(tokens=4000)  # 20 s of tokens at 5 ms each
    with socket.create_connection(("127.0.0.1", warm.settings.port), timeout=30) as sock:
        sock.sendall(raw_request(warm, body) + body)
        stream = sock.makefile("rb")
        assert stream.readline().startswith(b"HTTP/1.1 200")
        while stream.readline() != b"\r\n":  # the headers
            pass
        assert stream.readline()  # the first PayloadPart's chunk size: streaming
        assert outstanding(warm) == [1]
        stream.close()  # (the socket closes only once its file is closed too)
    wait_for(lambda: outstanding(warm) == [0], what="the instance to be released")
    # The instance connection was closed (that is what stops the generation), not pooled.
    wait_for(lambda: connections(warm) == {"open": 0, "idle": 0}, what="the connection to close")
    resp = warm.smr().invoke_endpoint_with_response_stream(EndpointName="warm", Body=tgi_body())
    assert b'"generated_text":"hello0 1 2 3 4 "' in payload_bytes(resp)


@pytest.fixture
def hasty(tmp_path: Path):
    """A gateway that gives a client 1 s to send each request whole."""
    with running_gateway(tmp_path / "state", request_timeout=1.0) as live:
        yield live


def test_a_client_too_slow_to_send_its_request_is_answered_408(hasty):
    body = tgi_body()
    runtime = raw_request(hasty, body).replace(b"/endpoints/warm/", b"/endpoints/any/")
    control = (
        b"POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: SageMaker.ListEndpoints\r\n"
        b"Content-Type: application/x-amz-json-1.1\r\nContent-Length: 2\r\n\r\n{"
    )
    # Headers, then bodies, cut; and a connection that never sends anything.
    *cut, (seconds, answer) = slow_clients(
        hasty.settings.port, [runtime[:40], runtime + body[:5], control, b""]
    )
    assert 0.9 < seconds < 10 and answer == b""
    for seconds, answer in cut:
        assert 0.9 < seconds < 10
        head, _, document = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 ")
        assert b"x-amzn-errortype: RequestTimeoutException" in head
        assert b"connection: close" in head and b"x-amzn-requestid: " in head
        assert json.loads(document) == {
            "__type": "RequestTimeoutException",
            "message": "The request did not arrive whole within 1 seconds.",
        }
    # Nothing is left of them: no connection, no request task.
    state = hasty.server.server_state
    wait_for(lambda: not state.connections and not state.tasks, what="connections to end")


def test_the_request_deadline_spares_long_streams_and_requests_queued_behind_them(hasty):
    create_synthetic_endpoint(hasty.sm(), "warm")
    long, short = tgi_body("long", tokens=300), tgi_body("short", tokens=2)  # 1.5 s, 10 ms
    with socket.create_connection(("127.0.0.1", hasty.settings.port), timeout=30) as sock:
        # A stream longer than the deadline, a request pipelined behind it in full, and a
        # third whose body never comes, all at once: the first two are served whole, the
        # third waits for them without being timed (uvicorn reads on while the first is
        # answered), then gets its 408.
        sock.sendall(
            raw_request(hasty, long)
            + long
            + raw_request(hasty, short)
            + short
            + raw_request(hasty, short)
            + short[:3]
        )
        stream = sock.makefile("rb")
        first, second, third = (read_response(stream) for _ in range(3))
    assert first[0] == 200 and b'"generated_text":"long0 1 2' in first[2]
    assert b"299 " in first[2]
    assert second[0] == 200 and b'"generated_text":"short0 1 "' in second[2]
    assert third[0] == 408 and third[1]["x-amzn-errortype"] == "RequestTimeoutException"
    delete_endpoint(hasty.sm(), "warm")
