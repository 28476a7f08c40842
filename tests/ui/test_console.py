"""The terminal commands against a real gateway: each one's output and exit status."""

from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from streamhost.chat import run_chat
from streamhost.client import stream_text
from streamhost.console import main
from streamhost.endpoints.clients import control_client, invocation_client
from streamhost.endpoints.conversation import turn_prompt
from streamhost.endpoints.invocation import (
    GenerationParameters,
    close_session,
    open_session,
    request_body,
    start_generation,
)
from tests.harness import GatewayProcess, free_port

# The terminal commands against a gateway process and tiny-model endpoints.
pytestmark = pytest.mark.slow


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(args)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_invoke_prints_the_answer_and_its_timings(
    gateway_home: GatewayProcess, slow_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(
        ["invoke", slow_endpoint, "count", "--max-new-tokens", "5", "--gateway", gateway_home.url],
        capsys,
    )
    assert status == 0
    assert out.strip() == "0 1 2 3 4"
    assert "latency" in err and "5 tokens" in err


def test_invoke_stream_reports_ttft_and_tokens_per_second(
    gateway_home: GatewayProcess, slow_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(
        [
            "invoke",
            slow_endpoint,
            "count",
            "--stream",
            "--max-new-tokens",
            "8",
            "--gateway",
            gateway_home.url,
        ],
        capsys,
    )
    assert status == 0
    assert out.strip() == "0 1 2 3 4 5 6 7"
    assert "TTFT" in err and "8 tokens" in err and "tokens/s" in err


def test_endpoints_lists_and_describes_with_the_api(
    gateway_home: GatewayProcess, slow_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(["endpoints", "--gateway", gateway_home.url], capsys)
    assert status == 0
    row = next(line for line in out.splitlines() if line.strip().startswith(slow_endpoint))
    assert "InService" in row and "tgi" in row and "synthetic:25" in row
    status, out, _ = run(
        ["endpoints", "describe", slow_endpoint, "--gateway", gateway_home.url], capsys
    )
    assert status == 0
    assert "api:             tgi" in out
    assert "huggingface-pytorch-tgi-inference" in out


def test_deploy_lmi_streams_json_lines_and_delete_removes_everything(
    gateway_home: GatewayProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    url = gateway_home.url
    status, _, err = run(
        [
            "deploy",
            "lmi-test",
            "--model",
            "synthetic:1",
            "--api",
            "lmi",
            "--instance-type",
            "ml.m5.large",
            "--gateway",
            url,
        ],
        capsys,
    )
    assert status == 0, err
    sm = control_client(url)
    described = sm.describe_endpoint(EndpointName="lmi-test")
    config = sm.describe_endpoint_config(EndpointConfigName=described["EndpointConfigName"])
    model = sm.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
    archive = Path(model["PrimaryContainer"]["ModelDataUrl"].removeprefix("file://"))
    with tarfile.open(archive) as tar:
        properties = tar.extractfile("serving.properties").read().decode()
    assert "option.model_id=synthetic:1" in properties
    assert "option.output_formatter=jsonlines" in properties
    assert "djl-inference" in model["PrimaryContainer"]["Image"]

    response = invocation_client(url).invoke_endpoint_with_response_stream(
        EndpointName="lmi-test",
        Body=json.dumps({"inputs": "hi", "parameters": {"max_new_tokens": 3}}),
    )
    assert response["ContentType"].startswith("application/jsonlines")
    assert "".join(stream_text(response)) == "0 1 2 "

    status, out, _ = run(
        ["invoke", "lmi-test", "hi", "--max-new-tokens", "3", "--gateway", url], capsys
    )
    assert (status, out) == (0, "0 1 2 \n")
    status, out, _ = run(
        ["invoke", "lmi-test", "hi", "--stream", "--max-new-tokens", "3", "--gateway", url], capsys
    )
    assert (status, out) == (0, "0 1 2 \n")

    status, out, err = run(["endpoints", "delete", "lmi-test", "--gateway", url], capsys)
    assert status == 0, err
    assert "deleted endpoint lmi-test" in out
    names = [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]]
    assert "lmi-test" not in names
    assert sm.list_models(NameContains="lmi-test")["Models"] == []
    assert sm.list_endpoint_configs(NameContains="lmi-test")["EndpointConfigs"] == []
    assert not archive.exists()


def test_delete_waits_for_a_scaling_activity_to_end(
    gateway_home: GatewayProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    # SageMaker refuses to delete an endpoint while it is Updating; the command waits.
    url = gateway_home.url
    status, _, err = run(["deploy", "scaled", "--model", "synthetic:1", "--gateway", url], capsys)
    assert status == 0, err
    sm = control_client(url)
    sm.update_endpoint_weights_and_capacities(
        EndpointName="scaled",
        DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 3}],
    )
    with pytest.raises(ClientError, match="in-progress"):
        sm.delete_endpoint(EndpointName="scaled")
    status, out, err = run(["endpoints", "delete", "scaled", "--gateway", url], capsys)
    assert (status, out) == (0, "deleted endpoint scaled\n"), err
    assert "Updating endpoint scaled" in err
    assert "scaled" not in [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]]
    assert sm.list_models(NameContains="scaled")["Models"] == []


def test_deploy_refuses_an_existing_endpoint_in_one_line(
    gateway_home: GatewayProcess, slow_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run(
        ["deploy", slow_endpoint, "--model", "tiny", "--gateway", gateway_home.url], capsys
    )
    assert status == 1
    assert err.count("\n") == 1
    assert f"endpoint {slow_endpoint} already exists" in err


def test_unknown_endpoint_is_one_clear_line(
    gateway_home: GatewayProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run(["invoke", "nowhere", "hi", "--gateway", gateway_home.url], capsys)
    assert status == 1
    assert err.count("\n") == 1
    assert err.startswith("streamhost invoke: ") and "nowhere" in err
    assert "Traceback" not in err


def test_unreachable_gateway_is_one_clear_line(
    gateway_home: GatewayProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    status, _, err = run(["endpoints", "--gateway", url], capsys)
    assert status == 1
    assert err == (
        f"streamhost endpoints: Cannot reach the streamhost gateway at {url}: start it with "
        "`streamhost up` (or `streamhost gateway`), or point STREAMHOST_GATEWAY_URL / "
        "--gateway at the right address.\n"
    )


def test_wrong_credentials_are_reported_as_such(
    gateway_home: GatewayProcess,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOME", str(gateway_home.home / "elsewhere"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "SHNOTAKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    status, _, err = run(["endpoints", "--gateway", gateway_home.url], capsys)
    assert status == 1
    assert "rejected the credentials" in err and "UnrecognizedClientException" in err


def test_gateway_url_comes_from_the_environment(
    gateway_home: GatewayProcess,
    slow_endpoint: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STREAMHOST_GATEWAY_URL", gateway_home.url)
    status, out, _ = run(["endpoints"], capsys)
    assert status == 0
    assert slow_endpoint in out


def test_chat_answers_each_turn_until_exit(
    gateway_home: GatewayProcess, slow_endpoint: str
) -> None:
    lines = iter(["first question", "", "second question", "/exit"])
    out, err = io.StringIO(), io.StringIO()
    status = run_chat(
        gateway_home.url,
        slow_endpoint,
        parameters=GenerationParameters(max_new_tokens=3),
        read=lambda _prompt: next(lines),
        out=out,
        err=err,
    )
    assert status == 0
    assert out.getvalue().count("bot> 0 1 2 \n") == 2
    assert err.getvalue().count("TTFT") == 2


def _input_tokens(error: ClientError) -> int:
    """The prompt length TGI's validation error reports ("Given: N `inputs` tokens")."""
    found = re.search(r"Given: (\d+) `inputs` tokens", str(error))
    assert found, str(error)
    return int(found.group(1))


def test_a_session_carries_the_conversation(
    gateway_home: GatewayProcess, chat_endpoint: str
) -> None:
    smr = invocation_client(gateway_home.url)
    first = request_body("tgi", turn_prompt("hello"), GenerationParameters(max_new_tokens=3))
    # Too many new tokens for the model: rejected, quoting the prompt's length in tokens.
    second = request_body(
        "tgi", turn_prompt("again", first=False), GenerationParameters(max_new_tokens=5000)
    )
    with pytest.raises(ClientError) as alone:
        start_generation(smr, chat_endpoint, second)
    session = open_session(smr, chat_endpoint)
    try:
        list(start_generation(smr, chat_endpoint, first, session_id=session))
        with pytest.raises(ClientError) as in_session:
            start_generation(smr, chat_endpoint, second, session_id=session)
    finally:
        close_session(smr, chat_endpoint, session)
    assert _input_tokens(in_session.value) > _input_tokens(alone.value) + 3
