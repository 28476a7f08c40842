"""Free TCP ports for the servers streamhost starts (model servers, benchmark peers)."""

from __future__ import annotations

import socket

__all__ = ["free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (the kernel's choice; another process may take it
    before it is bound again, which callers that start servers must allow for)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]
