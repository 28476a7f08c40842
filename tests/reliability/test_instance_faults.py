"""An instance killed (`kill -9`) or hung (SIGSTOP) under load: only its own streams fail,
in the protocol's form; the endpoint stays InService; a healthy replacement takes over."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time

import aiohttp
import psutil
import pytest

from tests.harness import (
    GatewayProcess,
    GatewayThread,
    assert_no_model_servers,
    create_synthetic_endpoint,
    delete_endpoint,
    wait_for,
)

from .streaming import connector, instance_metric, report, stream_tokens

pytestmark = pytest.mark.reliability

STREAMS = 24


class StatusWatch:
    """Polls DescribeEndpoint on a thread; every status seen, in order."""

    def __init__(self, sm, name: str) -> None:
        self.sm, self.name = sm, name
        self.seen: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            status = self.sm.describe_endpoint(EndpointName=self.name)["EndpointStatus"]
            if not self.seen or self.seen[-1] != status:
                self.seen.append(status)
            self._stop.wait(0.2)

    def __enter__(self) -> StatusWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


async def streams_with_a_fault(url: str, endpoint: str, tokens: int, fault) -> list:
    """STREAMS concurrent streams; `fault()` runs once every stream is under way."""
    async with aiohttp.ClientSession(connector=connector()) as http:
        running = [
            asyncio.create_task(stream_tokens(http, url, endpoint, tokens)) for _ in range(STREAMS)
        ]
        await asyncio.sleep(1.0)
        assert not any(task.done() for task in running)
        await asyncio.to_thread(fault)
        return await asyncio.gather(*running)


async def one_by_one(url: str, endpoint: str, count: int) -> list:
    async with aiohttp.ClientSession(connector=connector()) as http:
        return [await stream_tokens(http, url, endpoint, 5) for _ in range(count)]


def test_an_instance_killed_mid_stream_breaks_only_its_own_streams(tmp_path):
    gateway = GatewayProcess(tmp_path / "state").start()
    try:
        sm = gateway.sm()
        create_synthetic_endpoint(sm, "fragile", count=2, delay_ms=20)
        victim, survivor = gateway.instances("fragile")
        held = {}

        def kill() -> None:
            held["victim"] = instance_metric(victim, "tgi_batch_current_size")
            os.kill(victim.pid, signal.SIGKILL)

        with StatusWatch(sm, "fragile") as watch:
            outcomes = asyncio.run(streams_with_a_fault(gateway.url, "fragile", 150, kill))
            broken = [o for o in outcomes if not o.complete]
            # Exactly the victim's streams broke, with the event stream's own error ...
            assert len(broken) == held["victim"] > 0
            assert {(o.error, o.error_code) for o in broken} == {
                ("ModelStreamError", "StreamBroken")
            }
            assert all(o.in_order() and 0 < len(o.tokens) < 150 for o in broken)
            # ... and the others ran to the end, none the worse.
            for outcome in outcomes:
                if outcome.complete:
                    assert outcome.in_order() and len(outcome.tokens) == 150
            replaced = wait_for(
                lambda: (
                    len(pids := {r.pid for r in gateway.instances("fragile")}) == 2
                    and victim.pid not in pids
                    and pids
                ),
                what="a replacement instance",
            )
            wait_for(lambda: all(r.state == "InService" for r in gateway.instances("fragile")))
            after = asyncio.run(streams_with_a_fault(gateway.url, "fragile", 60, lambda: None))
            assert all(o.complete and o.in_order() for o in after)
        assert watch.seen == ["InService"]
        report(
            "instance kill -9",
            streams=STREAMS,
            broken=len(broken),
            completed=STREAMS - len(broken),
            replacement_pid=sorted(replaced - {survivor.pid}),
            endpoint_statuses=watch.seen,
        )
        delete_endpoint(sm, "fragile")
    finally:
        gateway.stop()
        assert_no_model_servers(tmp_path)


def test_a_hung_instance_times_out_its_streams_and_is_replaced(tmp_path):
    gateway = GatewayThread(
        tmp_path / "state", idle_timeout=1.5, health_interval=0.3, stop_timeout=2.0
    ).start()
    frozen = None
    try:
        sm = gateway.sm()
        create_synthetic_endpoint(sm, "sleepy", count=2, delay_ms=20)
        records = gateway.app.store.list_instances("sleepy")
        frozen, awake = records
        held = {}

        def freeze() -> None:
            held["frozen"] = instance_metric(frozen, "tgi_batch_current_size")
            held["at"] = time.monotonic()
            os.kill(frozen.pid, signal.SIGSTOP)

        with StatusWatch(sm, "sleepy") as watch:
            outcomes = asyncio.run(streams_with_a_fault(gateway.url, "sleepy", 200, freeze))
            stuck = [o for o in outcomes if not o.complete]
            assert len(stuck) == held["frozen"] > 0
            assert {(o.error, o.error_code) for o in stuck} == {
                ("ModelStreamError", "ModelInvocationTimeExceeded")
            }
            assert all("sent nothing for 1.5 seconds" in o.message for o in stuck)
            assert all(o.in_order() for o in outcomes)
            assert all(len(o.tokens) == 200 for o in outcomes if o.complete)
            # It is out of rotation at once: while the health checks make sure of it, new
            # requests go to the instance that answers.
            meanwhile = asyncio.run(one_by_one(gateway.url, "sleepy", 6))
            assert all(o.complete and o.in_order() for o in meanwhile), meanwhile
            assert frozen.pid in {r.pid for r in gateway.app.store.list_instances("sleepy")}
            # The health checks then replace it.
            wait_for(
                lambda: (
                    {r.pid for r in gateway.app.store.list_instances("sleepy")}
                    not in ({frozen.pid, awake.pid},)
                    and len(gateway.app.store.list_instances("sleepy")) == 2
                ),
                what="the hung instance to be replaced",
            )
            replaced_after = time.monotonic() - held["at"]
            assert not psutil.pid_exists(frozen.pid) or _zombie(frozen.pid)
            wait_for(
                lambda: sum(gateway.app.router.healthy_counts("sleepy").values()) == 2,
                what="two healthy instances",
            )
            after = asyncio.run(streams_with_a_fault(gateway.url, "sleepy", 60, lambda: None))
            assert all(o.complete and o.in_order() for o in after)
        assert watch.seen == ["InService"]
        report(
            "instance SIGSTOP",
            streams=STREAMS,
            timed_out=len(stuck),
            completed=STREAMS - len(stuck),
            replaced_after_s=round(replaced_after, 1),
            endpoint_statuses=watch.seen,
        )
        delete_endpoint(sm, "sleepy")
    finally:
        if frozen is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(frozen.pid, signal.SIGCONT)
        gateway.stop()
        assert_no_model_servers(tmp_path)


def _zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True
