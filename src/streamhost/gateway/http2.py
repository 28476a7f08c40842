"""The gateway's HTTP/2 listener: TLS with ALPN, beside the HTTP/1.1 one, in one process.

AWS's client of `InvokeEndpointWithBidirectionalStream` (aws-sdk-sagemaker-runtime-http2,
on the CRT) sends its events only over HTTP/2, which it negotiates by ALPN over TLS (over
plain HTTP it sends HTTP/1.1 with no body framing, so no event ever leaves it); SageMaker
serves it on port 8443. This listener serves the same app with hypercorn (HTTP/2 by h2),
with the HTTP/1.1 listener's protections: the same TLS certificate, SigV4 (the app's), a
bound on a request's header list (`MAX_HEADER_BYTES`, advertised as
SETTINGS_MAX_HEADER_LIST_SIZE; h2's HPACK decoder refuses more) and on its body's arrival
(`request_timeout`, checked by the app for requests over HTTP/2). uvicorn runs the app's
lifespan; hypercorn starts once it has, and stops with it.

Two fixes to hypercorn (0.17, 0.18), in `_patch_hypercorn`: DATA that arrives for a stream
whose response has ended (an error answered before the body was read, a bidirectional
stream ended while the client still sends) raises KeyError in its H2 protocol and drops
the whole connection; such DATA is acknowledged (flow control) and dropped instead, as it
already drops a late END_STREAM. And closing a TLS connection whose client still sends
(after a refused header block, say) raises `ssl.SSLError` out of its connection task,
logged as an unhandled traceback; the connection is closed either way, so that error is
dropped as it drops a reset connection's.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from typing import Any

from streamhost.uvicorn_http import MAX_FIELD_BYTES, MAX_HEADER_BYTES

from .settings import GatewaySettings

log = logging.getLogger("streamhost.gateway")


def _patch_hypercorn() -> None:
    """Patch hypercorn once (see the module's doc); a hypercorn without the methods patched
    is left alone (the listener then works as that version does)."""
    _quiet_tls_close()
    _drop_late_data()


def _quiet_tls_close() -> None:
    from hypercorn.asyncio import tcp_server

    server = getattr(tcp_server, "TCPServer", None)
    close = getattr(server, "_close", None)
    if server is None or close is None or getattr(close, "quiet_tls", False):
        return

    async def quiet_close(self: Any) -> None:
        try:
            await close(self)
        except ssl.SSLError:
            pass

    quiet_close.quiet_tls = True  # type: ignore[attr-defined]
    server._close = quiet_close


def _drop_late_data() -> None:
    import h2.events
    from hypercorn.protocol import h2 as h2_protocol

    protocol = getattr(h2_protocol, "H2Protocol", None)
    handle = getattr(protocol, "_handle_events", None)
    if protocol is None or handle is None or getattr(handle, "drops_late_data", False):
        return

    async def handle_events(self: Any, events: list[Any]) -> None:
        # In order, one run of hypercorn's own handling per stretch of events: a stream is
        # made by an event before its DATA.
        kept: list[Any] = []
        for event in events:
            if not isinstance(event, h2.events.DataReceived):
                kept.append(event)
                continue
            if kept:
                await handle(self, kept)
                kept = []
            if event.stream_id in self.streams:
                await handle(self, [event])
            else:
                self.connection.acknowledge_received_data(
                    event.flow_controlled_length, event.stream_id
                )
        if kept:
            await handle(self, kept)

    handle_events.drops_late_data = True  # type: ignore[attr-defined]
    protocol._handle_events = handle_events


def hypercorn_config(settings: GatewaySettings, sock: socket.socket, log_level: str) -> Any:
    """hypercorn's configuration for the HTTP/2 listener on the bound `sock`."""
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"fd://{sock.fileno()}"]
    config.certfile = str(settings.tls_cert)
    config.keyfile = str(settings.tls_key)
    config.alpn_protocols = ["h2", "http/1.1"]
    config.h2_max_header_list_size = MAX_HEADER_BYTES
    config.h11_max_incomplete_size = MAX_FIELD_BYTES
    config.include_server_header = False
    config.accesslog = None
    config.loglevel = log_level.upper()
    config.graceful_timeout = 5.0
    return config


async def serve_beside(
    server: Any,
    sockets: list[socket.socket] | None,
    app: Any,
    settings: GatewaySettings,
    http2_sock: socket.socket,
    log_level: str,
) -> None:
    """Run uvicorn's `server` and, once it has started the app, hypercorn on `http2_sock`;
    both stop when uvicorn does (SIGINT/SIGTERM)."""
    from hypercorn.asyncio import serve

    _patch_hypercorn()
    stop = asyncio.Event()
    main = asyncio.get_running_loop().create_task(server.serve(sockets=sockets))
    while not server.started and not main.done():
        await asyncio.sleep(0.05)
    second = None
    if not main.done():
        config = hypercorn_config(settings, http2_sock, log_level)
        second = asyncio.get_running_loop().create_task(
            serve(_without_lifespan(app), config, shutdown_trigger=stop.wait)
        )
    try:
        await main
    finally:
        stop.set()
        if second is not None:
            try:
                await asyncio.wait_for(second, config.graceful_timeout + 1)
            except (asyncio.TimeoutError, Exception):
                log.exception("the HTTP/2 listener did not stop cleanly")


def _without_lifespan(app: Any) -> Any:
    """`app` for a second server: the lifespan is the first server's."""

    async def second(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await app(scope, receive, send)

    return second
