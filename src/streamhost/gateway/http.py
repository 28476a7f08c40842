"""The gateway's HTTP/1.1 server protocol: uvicorn's, with a deadline on reading requests.

uvicorn waits for a request's bytes for as long as the client keeps its connection open: a
client that opens connections and sends nothing, half a request's headers or part of its
body ("slowloris") holds each connection — and, once the headers are in, a request task —
until it leaves, and delays a graceful shutdown. nginx gives a client 60 seconds
(`client_header_timeout`, `client_body_timeout`) and answers 408; so does the gateway: a
new connection must bring its first request, and every request must arrive whole, within
`timeout` seconds. Past that, a request that has begun is answered 408
`RequestTimeoutException` (botocore retries it) and the connection is closed; a
connection that sent no request is closed.

Nothing is added to a request's own path (every microsecond there is first-token
latency): each connection is looked at every `timeout / 4` seconds, and a request found
unfinished at five looks in a row — between `timeout` and 1.25 × `timeout` after its
first byte — has run out of time. The clock does not run while the gateway itself holds
the request back: while reading is paused or the request waits behind an earlier one on
the connection (pipelining). Idle keep-alive connections are uvicorn's own business
(closed after 5 s).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .errors import AwsError
from .runtime import new_request_id

__all__ = ["deadline_protocol", "request_timeout"]

_LOOKS = 4  # looks per timeout


def request_timeout(timeout: float) -> AwsError:
    """The error for a request that did not arrive whole in time."""
    return AwsError(
        "RequestTimeoutException",
        f"The request did not arrive whole within {timeout:g} seconds.",
        status=408,
    )


def _answer(error: AwsError) -> bytes:
    """`error` (a 408) as a whole HTTP response, worded as `send_error` words errors."""
    body = orjson.dumps(error.to_response())
    head = [
        b"HTTP/1.1 408 Request Timeout",
        b"content-type: application/json",
        b"x-amzn-requestid: %s" % new_request_id().encode(),
        b"content-length: %d" % len(body),
        b"connection: close",
    ]
    head += [b"%s: %s" % (k.lower().encode(), v.encode()) for k, v in error.headers().items()]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def deadline_protocol(timeout: float) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with the request deadline above (`uvicorn.Config(http=…)`)."""
    error = request_timeout(timeout)
    period = timeout / _LOOKS

    class DeadlineProtocol(HttpToolsProtocol):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._unfinished: object = None  # what the last look found unfinished
            self._looks = 0  # how many looks in a row found it
            self._look = self.loop.call_later(period, self._check)

        def connection_lost(self, exc: Exception | None) -> None:
            self._look.cancel()
            super().connection_lost(exc)

        def _check(self) -> None:
            if self.transport.is_closing():
                return
            unfinished = self._waiting_for()
            if unfinished is None or unfinished is not self._unfinished:
                self._unfinished, self._looks = unfinished, 0
            elif self._looks < _LOOKS - 1:
                self._looks += 1
            else:
                if unfinished is self.scope:
                    self.transport.write(_answer(error))  # a request has begun: it is answered
                self.transport.close()
                return
            self._look = self.loop.call_later(period, self._check)

        def _waiting_for(self) -> object:
            """What the connection is waiting for its client to finish: the current
            request's scope (headers or body not all in), the connection (nothing sent),
            or the last cycle (bytes that began no request); None while nothing is owed
            or the gateway itself holds the request back."""
            scope, cycle = self.scope, self.cycle
            if scope is None:
                return self  # no request yet
            if self.flow.read_paused or self.pipeline:
                return None  # reading is ours to resume; a request waits behind another
            if cycle is None or cycle.scope is not scope:  # its headers are not all in
                return scope if cycle is None or cycle.response_complete else None
            if cycle.more_body and not cycle.response_started:
                return scope  # its body is not all in, and it has no answer yet
            if cycle.response_complete and self.timeout_keep_alive_task is None:
                return cycle  # bytes came after the answer (ending keep-alive), no request
            return None

    return DeadlineProtocol
