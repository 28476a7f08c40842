"""`kill -9` of the gateway process, then a restart: every endpoint comes back, its
instances are adopted or cleaned up (none is orphaned), and the state store is intact."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys

import aiohttp
import psutil
import pytest

from streamhost.processes import own_group
from tests.harness import (
    GatewayProcess,
    assert_no_model_servers,
    create_synthetic_endpoint,
    delete_endpoint,
    model_servers,
    wait_for,
    wait_in_service,
)

from .streaming import connector, report, stream_tokens

pytestmark = pytest.mark.reliability


async def streams(gateway: GatewayProcess, endpoint: str, count: int, tokens: int) -> list:
    async with aiohttp.ClientSession(connector=connector()) as http:
        return await asyncio.gather(
            *(stream_tokens(http, gateway.url, endpoint, tokens) for _ in range(count)),
            return_exceptions=True,
        )


def integrity(db) -> str:
    with sqlite3.connect(db) as connection:
        return connection.execute("PRAGMA integrity_check").fetchone()[0]


def test_a_gateway_killed_mid_stream_and_mid_deploy_comes_back_whole(tmp_path):
    state = tmp_path / "state"
    first = GatewayProcess(state).start()
    try:
        sm = first.sm()
        create_synthetic_endpoint(sm, "steady", count=2, delay_ms=20)
        serving = {r.pid for r in first.instances("steady")}

        async def crash_mid_stream() -> list:
            running = asyncio.create_task(streams(first, "steady", 6, 500))
            await asyncio.to_thread(
                wait_for,
                lambda: len(first.instances("steady")) == 2,
                what="the steady instances",
            )
            await asyncio.sleep(1.0)
            # A second endpoint is still being created when the gateway dies.
            await asyncio.to_thread(
                create_synthetic_endpoint, sm, "newborn", count=2, delay_ms=20, wait=False
            )
            first.kill()
            return await running

        cut = asyncio.run(crash_mid_stream())
    finally:
        if first.popen is not None and first.popen.poll() is None:
            first.kill()
    # The clients lost their connection with the gateway (nothing could tell them more).
    assert all(isinstance(o, aiohttp.ClientError) or not o.complete for o in cut)
    # The instances outlived the gateway, as after a crash.
    assert serving <= {p.pid for p in model_servers(state)}
    assert integrity(first.db) == "ok"

    second = GatewayProcess(state).start()
    try:
        sm = second.sm()
        wait_in_service(sm, "steady")
        wait_in_service(sm, "newborn")
        adopted = {r.pid for r in second.instances("steady")}
        assert adopted == serving  # the same processes, serving again
        recorded = {r.pid for r in second.instances()}
        assert len(recorded) == 4
        # Every model server under the state folder is one the new gateway knows.
        wait_for(
            lambda: {p.pid for p in model_servers(state)} == recorded,
            what="unknown instances to be stopped",
        )
        for outcome in asyncio.run(streams(second, "steady", 4, 20)):
            assert outcome.complete and outcome.in_order()
        for outcome in asyncio.run(streams(second, "newborn", 4, 20)):
            assert outcome.complete and outcome.in_order()
        report(
            "gateway kill -9",
            adopted=sorted(adopted),
            restarted_instances=len(recorded - adopted),
            store_integrity=integrity(second.db),
        )
        delete_endpoint(sm, "steady")
        delete_endpoint(sm, "newborn")
    finally:
        second.stop()
        assert_no_model_servers(tmp_path)


def test_a_model_server_the_store_does_not_know_is_stopped_at_startup(tmp_path):
    # As if the gateway died between starting an instance and recording it.
    state = tmp_path / "state"
    model_dir = state / "endpoints" / "lost" / "0badf00d" / "alltraffic" / "model"
    model_dir.mkdir(parents=True)
    env = {**os.environ, "HF_MODEL_ID": "synthetic:1", "STREAMHOST_INSTANCE_SECRET": "s"}
    stray = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamhost.cli",
            "serve-model",
            "--model-dir",
            str(model_dir),
            "--port",
            "0",
        ],
        env=env,
        cwd=model_dir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        **own_group(),  # as the gateway starts instances
    )
    try:
        wait_for(lambda: model_servers(state), what="the stray model server")
        gateway = GatewayProcess(state).start()
        try:
            wait_for(lambda: stray.poll() is not None, what="the stray instance to be stopped")
        finally:
            gateway.stop()
    finally:
        if stray.poll() is None:
            stray.kill()
        stray.wait(10)
    assert not psutil.pid_exists(stray.pid) or psutil.Process(stray.pid).status() == "zombie"
