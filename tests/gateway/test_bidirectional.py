"""InvokeEndpointWithBidirectionalStream end to end: AWS's own client over HTTP/2, ours over
HTTP/1.1, through a real gateway process to the tiny model's server.

AWS's client (aws-sdk-sagemaker-runtime-http2) needs Python >= 3.12: `make test` installs
it into `.venv-aws` and `aws_bidi_client.py` drives it there, one scenario per process.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamhost.ports import free_port
from tests.harness import (
    ACCESS_KEY,
    SECRET_KEY,
    TGI_IMAGE,
    GatewayProcess,
    create_synthetic_endpoint,
    delete_endpoint,
    model_servers,
    running_gateway,
    tls_files,
    wait_for,
    wait_in_service,
)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
AWS_PYTHON = Path(os.environ.get("STREAMHOST_AWS_PYTHON", ROOT / ".venv-aws" / "bin" / "python"))
DRIVER = Path(__file__).with_name("aws_bidi_client.py")
ENDPOINT = "talk"


@pytest.fixture(scope="module")
def bidi_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A gateway serving HTTPS and HTTP/2 (a test CA's certificate) with endpoint `talk`
    on the tiny model behind the TGI API."""
    folder = tmp_path_factory.mktemp("bidi")
    cert, key, ca = tls_files(folder)
    http2_port = free_port()
    gateway = GatewayProcess(
        folder / "state",
        *["--tls-cert", str(cert), "--tls-key", str(key)],
        *["--http2-port", str(http2_port), "--idle-timeout", "20"],
        ca_file=str(ca),
    )
    gateway.http2_url = f"https://127.0.0.1:{http2_port}"  # type: ignore[attr-defined]
    gateway.start()
    try:
        create_synthetic_endpoint(
            gateway.sm(),
            ENDPOINT,
            environment={"HF_MODEL_ID": "tiny"},
            image=TGI_IMAGE,
        )
        yield gateway
        delete_endpoint(gateway.sm(), ENDPOINT)
    finally:
        gateway.stop()
    assert "Traceback" not in gateway.log_text(), gateway.log_text()


def driver(
    gateway: GatewayProcess, scenario: str, arg: str = "", endpoint: str = ENDPOINT
) -> list[str]:
    """The command that runs one scenario of AWS's client against the HTTP/2 listener."""
    if not AWS_PYTHON.exists():
        pytest.skip(f"AWS's bidirectional client is not installed ({AWS_PYTHON}): run make test")
    url = gateway.http2_url  # type: ignore[attr-defined]
    assert gateway.ca_file is not None
    where = [url, endpoint, gateway.ca_file, ACCESS_KEY, SECRET_KEY]
    return [str(AWS_PYTHON), str(DRIVER), scenario, *where, arg]


def aws_client(gateway: GatewayProcess, scenario: str, arg: str = "", **run: Any) -> Any:
    """Run one scenario of AWS's client; its result (`check=False`: a failed run gives
    {"error": the exception's name})."""
    completed = subprocess.run(
        driver(gateway, scenario, arg, run.get("endpoint", ENDPOINT)),
        capture_output=True,
        text=True,
        timeout=run.get("timeout", 120),
        check=False,
    )
    if completed.returncode != 0 and not run.get("check", True):
        return {"error": completed.stderr.strip().splitlines()[-1].split(":")[0].split(".")[-1]}
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def tokens(parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The TGI stream events of an answer's PARTIAL parts."""
    return [json.loads(part["data"]) for part in parts if part["state"] == "PARTIAL"]


def test_a_conversation_streams_turn_by_turn_over_http2(bidi_gateway):
    result = aws_client(bidi_gateway, "conversation")
    assert result["variant"] == "AllTraffic"
    assert len(result["answers"]) == 3
    for answer in result["answers"]:
        # One PARTIAL part per token event (TGI's own JSON), then an empty COMPLETE part.
        assert [part["state"] for part in answer] == ["PARTIAL"] * 8 + ["COMPLETE"]
        assert all(part["type"] == "UTF8" for part in answer)
        assert answer[-1]["data"] == ""
        events = tokens(answer)
        assert [event["index"] for event in events] == list(range(1, 9))
        assert events[-1]["generated_text"] is not None
    assert result["rest"] == []


def test_the_history_stays_on_the_server(bidi_gateway):
    # Each turn goes after the turns before it: the prompt grows by what was said.
    first = aws_client(bidi_gateway, "conversation", json.dumps(["Hello"]))
    both = aws_client(bidi_gateway, "conversation", json.dumps(["Hello", " again"]))
    alone = aws_client(bidi_gateway, "conversation", json.dumps([" again"]))
    assert tokens(first["answers"][0]) == tokens(both["answers"][0])  # greedy: the same
    assert tokens(both["answers"][1]) != tokens(alone["answers"][0])


def test_an_interrupt_stops_the_answer_and_the_stream_goes_on(bidi_gateway):
    result = aws_client(bidi_gateway, "interrupt")
    cut = result["interrupted"]
    assert cut[-1]["state"] == "COMPLETE"
    assert 3 <= len(cut) < 200  # far short of the 2000 tokens asked for
    assert [part["state"] for part in result["after"]] == ["PARTIAL"] * 3 + ["COMPLETE"]
    assert result["rest"] == []


def test_a_message_in_many_parts_and_a_binary_one(bidi_gateway):
    result = aws_client(bidi_gateway, "split")
    assert result["pieces"] > 10
    assert len(tokens(result["answer"])) == 4
    assert len(tokens(result["binary"])) == 3


@pytest.mark.parametrize("scenario", ["forged", "replayed"])
def test_an_event_not_signed_in_the_chain_is_refused(bidi_gateway, scenario):
    events = aws_client(bidi_gateway, scenario)["events"]
    assert events[-1]["error"] == "ModelStreamError", events
    assert events[-1]["code"] == "InvalidSignatureException"
    assert "signature does not match" in events[-1]["message"]
    if scenario == "forged":
        assert len(events) == 1  # nothing reached the model
    # A replayed event ends the stream as it arrives, whatever its original's answer got
    # out before: it follows the original at once here.


def test_a_request_signed_with_the_wrong_key_is_refused(bidi_gateway):
    result = aws_client(bidi_gateway, "refused")
    assert "signature" in json.dumps(result).lower(), result


def test_an_unknown_endpoint_is_the_modelled_input_validation_error(bidi_gateway):
    result = aws_client(bidi_gateway, "conversation", endpoint="nope", check=False)
    assert result == {"error": "InputValidationError"}


def test_a_slow_reader_gets_every_part_in_order(bidi_gateway):
    parts = aws_client(bidi_gateway, "slow_reader", "64")["answer"]
    events = tokens(parts)
    assert [event["index"] for event in events] == list(range(1, 65))
    assert parts[-1]["state"] == "COMPLETE"


def test_an_instance_killed_mid_stream_ends_it_with_the_modelled_error(bidi_gateway):
    process = subprocess.Popen(
        driver(bidi_gateway, "until_broken"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert "started" in process.stdout.readline()
        (server,) = bidi_gateway.model_servers()
        server.send_signal(signal.SIGKILL)
        out, _ = process.communicate(timeout=60)
    finally:
        process.kill()
    events = json.loads(out.strip().splitlines()[-1])["events"]
    assert events[-1]["error"] == "ModelStreamError", events
    assert events[-1]["code"] == "StreamBroken"
    # The endpoint heals: a new instance answers a new stream (until then, the stream is
    # refused with the modelled ServiceUnavailableError).
    answers: list[Any] = []

    def answered() -> bool:
        result = aws_client(bidi_gateway, "conversation", json.dumps(["Hi"]), check=False)
        if "error" in result:
            assert result["error"] == "ServiceUnavailableError", result
            return False
        answers.extend(result["answers"])
        return True

    wait_for(answered, timeout=120, what="a new instance", interval=1.0)
    assert answers


def test_a_hundred_streams_at_once(bidi_gateway):
    result = aws_client(bidi_gateway, "many", "100", timeout=300)
    assert result["failures"] == []
    assert len(result["answers"]) == 100
    for texts in result["answers"]:
        assert len(texts) == 2
        for text in texts:
            lines = [json.loads(line) for line in text.splitlines()]
            assert [line["index"] for line in lines] == list(range(1, 7))


def test_our_client_over_http1(bidi_gateway):
    from streamhost.client.bidi import open_bidi_stream

    async def talk() -> tuple[list[str], list[Any], str | None]:
        stream = await open_bidi_stream(
            ENDPOINT,
            bidi_gateway.url,
            credentials=(ACCESS_KEY, SECRET_KEY),
            ca_file=bidi_gateway.ca_file,
        )
        async with stream:
            await stream.send(json.dumps({"inputs": "Hi", "parameters": {"max_new_tokens": 5}}))
            text = [piece async for piece in stream.answer_text()]
            await stream.send(json.dumps({"inputs": "Go", "parameters": {"max_new_tokens": 500}}))
            parts = []
            async for part in stream.parts():
                parts.append(part)
                if len(parts) == 2:
                    await stream.interrupt()
                if part.complete:
                    break
            return text, parts, stream.variant

    text, parts, variant = asyncio.run(talk())
    assert len(text) == 5 and variant == "AllTraffic"
    assert parts[-1].complete and len(parts) < 100


def test_the_http2_listener_has_the_http1_listeners_protections(bidi_gateway):
    import httpx

    url = bidi_gateway.http2_url  # type: ignore[attr-defined]
    trust = ssl.create_default_context(cafile=bidi_gateway.ca_file)
    with httpx.Client(http2=True, verify=trust, timeout=30) as client:
        unsigned = client.post(f"{url}/endpoints/{ENDPOINT}/invocations", content=b"{}")
        assert unsigned.http_version == "HTTP/2"
        assert unsigned.status_code == 403
        assert unsigned.headers["x-amzn-errortype"] == "MissingAuthenticationTokenException"
        with pytest.raises(httpx.HTTPError):
            client.post(url + "/", headers={"x-big": "a" * 100_000}, content=b"{}")
    # The listener lives on: a new connection is served.
    with httpx.Client(http2=True, verify=trust, timeout=30) as client:
        assert client.get(url + "/ping").status_code == 200


def test_a_stream_on_a_draining_instance_gets_the_drain_bound_then_the_modelled_error(
    tmp_path: Path,
):
    from streamhost.client.bidi import open_bidi_stream
    from streamhost.client.errors import ModelStreamError

    with running_gateway(tmp_path, drain_timeout=3.0) as gateway:
        sm = gateway.sm()
        create_synthetic_endpoint(sm, "drained", delay_ms=5)
        sm.create_endpoint_config(
            EndpointConfigName="drained-next",
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "ModelName": "drained-model",
                    "InstanceType": "ml.m5.xlarge",
                    "InitialInstanceCount": 1,
                }
            ],
        )
        turn = json.dumps({"inputs": "count", "parameters": {"max_new_tokens": 3}})

        async def talk() -> tuple[list[str], list[str], float]:
            stream = await open_bidi_stream(
                "drained", gateway.url, credentials=(ACCESS_KEY, SECRET_KEY)
            )
            async with stream:
                await stream.send(turn)
                before = [text async for text in stream.answer_text()]
                sm.update_endpoint(EndpointName="drained", EndpointConfigName="drained-next")
                updated = time.monotonic()
                await stream.send(turn)  # the stream stays on its instance meanwhile
                during = [text async for text in stream.answer_text()]
                with pytest.raises(ModelStreamError) as ended:
                    async for _ in stream.parts():
                        pass
                assert ended.value.error_code == "StreamBroken"
                return before, during, time.monotonic() - updated

        before, during, waited = asyncio.run(talk())
        assert before == during == ["0 ", "1 ", "2 "]
        # The new instance starts, then the old one drains for the bound, then stops.
        assert 3.0 <= waited < 60
        wait_in_service(sm, "drained")
        assert len(model_servers(tmp_path)) == 1
        delete_endpoint(sm, "drained")
