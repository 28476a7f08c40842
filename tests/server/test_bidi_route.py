"""The model server's bidirectional-stream WebSocket (`/invocations-bidirectional-stream`),
spoken to directly with the websockets library, as SageMaker's front end speaks to it."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake, InvalidStatus

from tests.harness import start_model_server

PATH = "/invocations-bidirectional-stream"


def ws_url(server: Any) -> str:
    return server.url.replace("http://", "ws://") + PATH


async def answer(ws: Any) -> list[Any]:
    """The fragments of one answer (one message)."""
    return [fragment async for fragment in ws.recv_streaming()]


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_accepts_within_250_ms_and_answers_pings(tgi_server):
    async def go() -> tuple[float, float]:
        started = time.perf_counter()
        async with connect(ws_url(tgi_server)) as ws:
            accepted = time.perf_counter() - started
            pong = await ws.ping(b"are you there")
            latency = await asyncio.wait_for(pong, 5)
            return accepted, latency

    accepted, latency = run(go())
    assert accepted < 0.25
    assert latency >= 0


def test_a_turn_is_answered_as_one_message_a_fragment_per_token(tgi_server):
    async def go() -> list[Any]:
        async with connect(ws_url(tgi_server)) as ws:
            await ws.send(json.dumps({"inputs": "Hello", "parameters": {"max_new_tokens": 5}}))
            return await answer(ws)

    fragments = run(go())
    assert len(fragments) == 6 and fragments[-1] == ""
    events = [json.loads(fragment) for fragment in fragments[:-1]]
    assert [event["index"] for event in events] == [1, 2, 3, 4, 5]
    assert events[-1]["generated_text"] is not None  # TGI's last stream event
    assert all(fragment.endswith("\n") for fragment in fragments[:-1])


def test_a_turn_sent_in_fragments_is_one_request(tgi_server):
    async def go() -> list[Any]:
        async with connect(ws_url(tgi_server)) as ws:
            body = json.dumps({"inputs": "Hello", "parameters": {"max_new_tokens": 2}})
            await ws.send([body[:5], body[5:11], body[11:]])  # text frames without FIN
            return await answer(ws)

    assert len(run(go())) == 3


def test_lmi_and_openai_turns_answer_in_their_own_shapes(lmi_server, tgi_server):
    async def go(server: Any, body: dict[str, Any]) -> list[Any]:
        async with connect(ws_url(server)) as ws:
            await ws.send(json.dumps(body))
            return [json.loads(f) for f in await answer(ws) if f]

    lmi = run(go(lmi_server, {"inputs": "Hi", "parameters": {"max_new_tokens": 3}}))
    assert len(lmi) == 3 and all("outputs" in event for event in lmi)  # LMI's jsonlines
    chat = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}
    openai = run(go(tgi_server, chat))
    assert all(event["object"] == "chat.completion.chunk" for event in openai)
    assert openai[-1]["choices"][0]["finish_reason"] == "length"


def test_a_bad_turn_gets_the_apis_error_and_the_conversation_goes_on(tgi_server):
    async def go() -> tuple[Any, Any, list[Any]]:
        async with connect(ws_url(tgi_server)) as ws:
            await ws.send("this is not JSON")
            not_json = json.loads(await ws.recv())
            await ws.send(json.dumps({"inputs": "Hi", "parameters": {"max_new_tokens": -1}}))
            invalid = json.loads(await ws.recv())
            await ws.send(json.dumps({"inputs": "Hi", "parameters": {"max_new_tokens": 2}}))
            return not_json, invalid, await answer(ws)

    not_json, invalid, fine = run(go())
    assert not_json["error_type"] == "validation" and "JSON" in not_json["error"]
    assert invalid["error_type"] == "validation"
    assert len(fine) == 3


def test_an_interrupt_stops_the_answer_and_the_turns_wait_their_turn(tgi_server):
    async def go() -> tuple[list[Any], list[Any], list[Any]]:
        async with connect(ws_url(tgi_server)) as ws:
            await ws.send(json.dumps({"inputs": "Go", "parameters": {"max_new_tokens": 1000}}))
            await ws.send(json.dumps({"inputs": "Then", "parameters": {"max_new_tokens": 2}}))
            fragments = []
            async for fragment in ws.recv_streaming():
                fragments.append(fragment)
                if len(fragments) == 3:
                    await ws.send(json.dumps({"requestType": "INTERRUPT"}))
            queued = await answer(ws)  # the turn sent meanwhile, answered after
            await ws.send(json.dumps({"requestType": "INTERRUPT"}))  # nothing to stop
            await ws.send(json.dumps({"inputs": "Last", "parameters": {"max_new_tokens": 1}}))
            return fragments, queued, await answer(ws)

    cut, queued, last = run(go())
    assert cut[-1] == "" and len(cut) < 100
    assert len(queued) == 3 and len(last) == 2


def test_the_history_goes_before_each_turn(tgi_server):
    async def prompt_tokens(turns: int) -> list[int]:
        counts = []
        async with connect(ws_url(tgi_server)) as ws:
            for _ in range(turns):
                body = {
                    "messages": [{"role": "user", "content": "Hi"}],
                    "max_tokens": 4,
                    "stream_options": {"include_usage": True},
                }
                await ws.send(json.dumps(body))
                usage = json.loads((await answer(ws))[-2])["usage"]
                counts.append(usage["prompt_tokens"])
        return counts

    first, second, third = run(prompt_tokens(3))
    # Each turn's prompt holds the turns before it and their 4-token answers.
    assert first < second < third
    assert second - first > 4 and third - second > 4


def test_only_its_gateway_may_connect(tmp_path):
    server = start_model_server(
        {"HF_MODEL_ID": "synthetic:1", "STREAMHOST_INSTANCE_SECRET": "s3cret"},
        model_dir=str(tmp_path),
    )
    try:

        async def refused() -> None:
            async with connect(ws_url(server)):
                pass

        with pytest.raises(InvalidStatus):
            run(refused())

        async def allowed() -> list[Any]:
            headers = {"x-streamhost-instance-secret": "s3cret"}
            async with connect(ws_url(server), additional_headers=headers) as ws:
                await ws.send(json.dumps({"inputs": "Hi", "parameters": {"max_new_tokens": 1}}))
                return await answer(ws)

        assert len(run(allowed())) == 2

        async def gateway_with_a_wrong_secret() -> BaseException:
            from streamhost.gateway.bidi import InstanceSocket

            socket = InstanceSocket(
                None,  # type: ignore[arg-type]
                ws_url(server),
                [("x-streamhost-instance-secret", "wrong")],
            )
            loop = asyncio.get_running_loop()
            await loop.create_connection(lambda: socket, "127.0.0.1", server.port)
            with pytest.raises(InvalidHandshake) as refused:
                await asyncio.wait_for(socket.opened, 10)
            socket.close()  # a socket whose handshake was refused closes without an error
            return refused.value

        assert "403" in str(run(gateway_with_a_wrong_secret()))
    finally:
        server.stop()
