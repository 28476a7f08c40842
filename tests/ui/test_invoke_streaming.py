"""``streamhost invoke --stream`` prints each token as it arrives, not at the end."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from tests.harness import GatewayProcess

from .conftest import streamhost_command

# `streamhost invoke --stream` as a process against the UI tests' gateway.
pytestmark = pytest.mark.slow


def test_invoke_stream_prints_tokens_long_before_the_generation_ends(
    ui_gateway: GatewayProcess, slow_endpoint: str
) -> None:
    # 160 tokens, one every 25 ms: four seconds of generation.
    process = subprocess.Popen(
        [
            *streamhost_command("invoke"),
            slow_endpoint,
            "count",
            "--stream",
            "--max-new-tokens",
            "160",
            "--gateway",
            ui_gateway.url,
        ],
        env=ui_gateway.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    arrivals: list[tuple[float, bytes]] = []
    while chunk := os.read(process.stdout.fileno(), 65536):
        arrivals.append((time.monotonic(), chunk))
    ended = time.monotonic()
    stderr = process.stderr.read().decode()
    assert process.wait(30) == 0, stderr

    output = b"".join(chunk for _, chunk in arrivals).decode()
    assert output.split() == [str(n) for n in range(160)]
    first = next(at for at, chunk in arrivals if chunk.strip())
    assert ended - first > 2.5, "the first token came out only near the end"
    assert len(arrivals) >= 20, "the answer came out in a few big pieces"
    assert "TTFT" in stderr and "160 tokens" in stderr
