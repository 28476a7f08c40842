"""A client that stops reading: backpressure reaches the instance, the stream is ended at
the gateway's `--stream-timeout`, the generation is cancelled, and memory stays bounded."""

from __future__ import annotations

import socket
import time

import pytest

from tests.harness import (
    GatewayProcess,
    assert_no_model_servers,
    create_synthetic_endpoint,
    delete_endpoint,
    signed_headers,
    tgi_body,
    wait_for,
)

from .streaming import instance_metric, report, rss_mib

pytestmark = pytest.mark.reliability

STREAM_TIMEOUT = 5.0
STALLED = 3
# Tokens every 0.2 ms: a few MB a second per stream, enough to fill the socket buffers
# between the gateway and a client that reads nothing well before the stream timeout.
DELAY_MS = 0.2
TOKENS = 200_000  # 40 s at best: far longer than the stream may last


def stalled_stream(url: str, endpoint: str) -> socket.socket:
    """Send a signed streaming request on a socket with a small receive buffer, and read
    nothing back."""
    target = f"{url}/endpoints/{endpoint}/invocations-response-stream"
    body = tgi_body(tokens=TOKENS)
    headers = signed_headers(target, body, {"Content-Type": "application/json"})
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    head = f"POST /endpoints/{endpoint}/invocations-response-stream HTTP/1.1\r\n"
    head += f"Host: {host}:{port}\r\nContent-Length: {len(body)}\r\n"
    skip = ("host", "content-length")
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items() if k.lower() not in skip)
    sock.sendall(head.encode() + b"\r\n" + body)
    return sock


def drain(sock: socket.socket, timeout: float) -> tuple[bytes, bool]:
    """Read what the gateway sent; (bytes, whether the stream is over: the connection
    closed, or the response ended with the stream's error event)."""
    sock.settimeout(timeout)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
            if received.endswith(b"\r\n0\r\n\r\n"):
                # The socket had room for the error after all (a slow machine generated
                # less than the buffers hold before the timeout).
                return received, b"ModelInvocationTimeExceeded" in received
    except TimeoutError:
        return received, False
    except ConnectionResetError:
        pass
    return received, True


def test_a_client_that_stops_reading_is_cut_off_at_the_stream_timeout(tmp_path):
    gateway = GatewayProcess(tmp_path / "state", "--stream-timeout", str(STREAM_TIMEOUT)).start()
    try:
        sm = gateway.sm()
        create_synthetic_endpoint(
            sm,
            "stall",
            environment={
                "HF_MODEL_ID": f"synthetic:{DELAY_MS}",
                "MAX_TOTAL_TOKENS": str(TOKENS + 16),
            },
        )
        (record,) = gateway.instances("stall")
        before = {"gateway": rss_mib(gateway.pid), "instance": rss_mib(record.pid)}
        started = time.monotonic()
        sockets = [stalled_stream(gateway.url, "stall") for _ in range(STALLED)]
        wait_for(
            lambda: instance_metric(record, "tgi_batch_current_size") == STALLED,
            what="the stalled streams to be generating",
        )
        peak = dict(before)
        while time.monotonic() - started < STREAM_TIMEOUT + 3:
            peak["gateway"] = max(peak["gateway"], rss_mib(gateway.pid))
            peak["instance"] = max(peak["instance"], rss_mib(record.pid))
            time.sleep(0.2)

        # Without reading a byte from any client, the gateway gave up on each at the stream
        # timeout and closed the upstream connection, which cancelled each generation ...
        wait_for(
            lambda: (
                instance_metric(record, "tgi_batch_current_size") == 0
                and instance_metric(record, "tgi_queue_size") == 0
            ),
            timeout=5,
            what="the gateway to cancel the stalled generations",
        )
        # ... and closed the client's socket (its buffer is full, so no error event can be
        # added): what was buffered is there to read, then the end of the connection.
        # (Had the buffers not filled by then, the error event ends the stream instead.)
        for sock in sockets:
            data, closed = drain(sock, timeout=2)
            assert closed, "the gateway kept a stream open past --stream-timeout"
            assert data.startswith(b"HTTP/1.1 200")
            sock.close()
        cut_off = time.monotonic() - started
        generated = instance_metric(record, "streamhost_generated_tokens")
        report(
            "slow reader",
            stalled=STALLED,
            stream_timeout_s=STREAM_TIMEOUT,
            cut_off_after_s=round(cut_off, 2),
            rss_before_mib=before,
            rss_peak_mib=peak,
            tokens_generated=generated,
            tokens_asked=STALLED * TOKENS,
        )
        assert generated < STALLED * TOKENS / 4
        assert peak["gateway"] - before["gateway"] < 32
        assert peak["instance"] - before["instance"] < 128
        delete_endpoint(sm, "stall")
    finally:
        gateway.stop()
        assert_no_model_servers(tmp_path)
