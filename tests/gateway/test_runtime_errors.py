"""Every refusal is a proper AWS error (never a 500 for a model's fault), and the gateway
keeps serving after each."""

from __future__ import annotations

import json
import os
import signal
import socket
import urllib.error
import urllib.request

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError, EventStreamError

from tests.harness import (
    ACCESS_KEY,
    REGION,
    ROLE,
    SECRET_KEY,
    client,
    create_synthetic_endpoint,
    delete_endpoint,
    error_of,
    payload_bytes,
    running_gateway,
    tgi_body,
    wait_for,
)

SIX_MIB = 6 * 1024 * 1024


def signed_post(
    url: str, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, dict, dict]:
    """A raw request signed like boto3 signs, for bodies boto3 would never send."""
    request = AWSRequest(method="POST", url=url + path, data=body, headers=headers)
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "sagemaker", REGION).add_auth(request)
    prepared = request.prepare()
    raw = urllib.request.Request(prepared.url, data=body, headers=dict(prepared.headers))
    try:
        with urllib.request.urlopen(raw, timeout=30) as response:
            return response.status, dict(response.headers), json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read() or b"{}")


def refused(port: int) -> bool:
    """Whether nothing listens on a loopback port any more (a request would meet a closed
    door, not a dying process: that one is a 424)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        pass
    return False


def still_serving(gateway, endpoint: str = "steady") -> None:
    resp = gateway.smr().invoke_endpoint_with_response_stream(
        EndpointName=endpoint, Body=tgi_body()
    )
    assert b"generated_text" in payload_bytes(resp)


@pytest.fixture(scope="module")
def steady(module_gateway):
    """A gateway whose endpoint `steady` serves; each test leaves it serving."""
    create_synthetic_endpoint(module_gateway.sm(), "steady")
    yield module_gateway
    delete_endpoint(module_gateway.sm(), "steady")


def test_a_wrong_secret_is_invalid_signature_on_both_planes(steady):
    smr = client("sagemaker-runtime", steady.url, secret="wrong")
    with pytest.raises(ClientError) as raised:
        smr.invoke_endpoint_with_response_stream(EndpointName="steady", Body=tgi_body())
    status, code, message = error_of(raised)
    assert (status, code) == (403, "InvalidSignatureException")
    assert message.startswith("The request signature we calculated does not match")
    with pytest.raises(ClientError) as raised:
        client("sagemaker", steady.url, secret="wrong").list_endpoints()
    assert error_of(raised)[:2] == (403, "InvalidSignatureException")
    still_serving(steady)


def test_an_unsigned_request_is_missing_authentication(steady):
    raw = urllib.request.Request(
        steady.url + "/endpoints/steady/invocations", data=tgi_body(), method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(raw, timeout=10)
    assert raised.value.code == 403
    assert raised.value.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
    with urllib.request.urlopen(steady.url + "/ping", timeout=10) as ping:
        assert ping.status == 200  # the gateway's own health needs no signature
    still_serving(steady)


def test_an_unknown_endpoint_is_a_validation_error(steady):
    smr = steady.smr()
    for call in (smr.invoke_endpoint, smr.invoke_endpoint_with_response_stream):
        with pytest.raises(ClientError) as raised:
            call(EndpointName="nope", Body=tgi_body())
        assert error_of(raised) == (
            400,
            "ValidationError",
            "Endpoint nope of account 123456789012 not found.",
        )
    still_serving(steady)


def test_a_body_over_6_mib_is_refused_by_the_gateway(steady):
    smr = steady.smr()
    for call in (smr.invoke_endpoint, smr.invoke_endpoint_with_response_stream):
        with pytest.raises(ClientError) as raised:
            call(EndpointName="steady", Body=b"x" * (SIX_MIB + 1))
        status, code, message = error_of(raised)
        assert (status, code) == (413, "ValidationError")
        assert "6291456" in message
    still_serving(steady)


def test_a_container_error_is_a_424_model_error_with_its_original_status(steady):
    smr = steady.smr()
    with pytest.raises(ClientError) as raised:
        smr.invoke_endpoint(
            EndpointName="steady", Body=b"{not json", ContentType="application/json"
        )
    response = raised.value.response
    assert error_of(raised)[:2] == (424, "ModelError")
    assert response["OriginalStatusCode"] == 400
    assert "Failed to parse the request body as JSON" in response["OriginalMessage"]
    assert response["LogStreamArn"] == (
        "arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/Endpoints/steady"
    )
    assert "Received client error (400) from primary" in response["Error"]["Message"]
    # The stream operation reports it before any event, as an ordinary error.
    with pytest.raises(ClientError) as raised:
        smr.invoke_endpoint_with_response_stream(EndpointName="steady", Body=b"[1, 2]")
    assert not isinstance(raised.value, EventStreamError)
    assert error_of(raised)[:2] == (424, "ModelError")
    # 6 MiB passes the gateway; the container's own (smaller) limit answers 413.
    with pytest.raises(ClientError) as raised:
        smr.invoke_endpoint(EndpointName="steady", Body=b"x" * SIX_MIB)
    assert raised.value.response["OriginalStatusCode"] == 413
    still_serving(steady)


def test_no_healthy_instance_is_503_service_unavailable(steady):
    (record,) = steady.app.store.list_instances("steady")
    smr = steady.smr()  # made first: on a busy machine, making it outlasts the replacement
    os.kill(record.pid, signal.SIGKILL)
    wait_for(lambda: refused(record.port), 10, "the instance's port to close")
    with pytest.raises(ClientError) as raised:
        smr.invoke_endpoint(EndpointName="steady", Body=tgi_body(stream=False))
    assert error_of(raised)[:2] == (503, "ServiceUnavailable")
    steady.sm().get_waiter("endpoint_in_service").wait(EndpointName="steady")
    healthy = steady.app.router.healthy_counts
    wait_for(lambda: healthy("steady").get("AllTraffic"), 30, "the instance to be replaced")
    still_serving(steady)


def test_malformed_control_requests_get_their_aws_errors(steady):
    headers = {"Content-Type": "application/x-amz-json-1.1"}
    status, _, body = signed_post(
        steady.url, "/", b"{not json", {**headers, "X-Amz-Target": "SageMaker.ListEndpoints"}
    )
    assert (status, body["__type"]) == (400, "SerializationException")
    status, _, body = signed_post(
        steady.url, "/", b"{}", {**headers, "X-Amz-Target": "SageMaker.RebootTheWorld"}
    )
    assert (status, body["__type"]) == (400, "UnknownOperationException")
    with pytest.raises(ClientError) as raised:
        steady.sm().create_endpoint_config(
            EndpointConfigName="bad",
            ProductionVariants=[
                {"VariantName": "v", "ModelName": "steady-model", "InstanceType": "local"}
            ],
        )
    assert error_of(raised)[1] == "ValidationException"
    assert "Member must satisfy enum value set" in error_of(raised)[2]
    still_serving(steady)


def test_an_image_streamhost_cannot_run_is_refused_at_create_model(steady):
    with pytest.raises(ClientError) as raised:
        steady.sm().create_model(
            ModelName="xgboost",
            ExecutionRoleArn=ROLE,
            PrimaryContainer={
                "Image": "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
            },
        )
    status, code, message = error_of(raised)
    assert (status, code) == (400, "ValidationException")
    assert (
        "cannot be run by streamhost: use a TGI, LMI/DJL, vLLM or streamhost image URI" in message
    )
    still_serving(steady)


def test_streams_past_the_time_limit_end_with_model_invocation_time_exceeded(tmp_path):
    with running_gateway(tmp_path / "state", stream_timeout=0.5, idle_timeout=0.4) as live:
        sm, smr = live.sm(), live.smr()
        create_synthetic_endpoint(sm, "slow", delay_ms=20)
        resp = smr.invoke_endpoint_with_response_stream(
            EndpointName="slow", Body=tgi_body(tokens=500)
        )
        with pytest.raises(EventStreamError) as raised:
            payload_bytes(resp)
        assert raised.value.response["Error"]["Code"] == "ModelStreamError"
        assert (
            "did not complete sending the inference response in the allotted time"
            in (raised.value.response["Error"]["Message"])
        )
        delete_endpoint(sm, "slow")

        create_synthetic_endpoint(sm, "silent", delay_ms=1500)  # quieter than idle_timeout
        resp = smr.invoke_endpoint_with_response_stream(
            EndpointName="silent", Body=tgi_body(tokens=3)
        )
        with pytest.raises(EventStreamError) as raised:
            payload_bytes(resp)
        assert "sent nothing for 0.4 seconds" in raised.value.response["Error"]["Message"]
        delete_endpoint(sm, "silent")


def test_a_stream_longer_than_the_idle_limit_is_not_silence_while_tokens_flow(tmp_path):
    # The idle limit counts from the last chunk, also for chunks the relay wrote straight
    # from the instance connection's callback while its task kept waiting.
    with running_gateway(tmp_path / "state", idle_timeout=0.4) as live:
        sm, smr = live.sm(), live.smr()
        create_synthetic_endpoint(sm, "steady", delay_ms=100)  # 1.5 s of tokens
        resp = smr.invoke_endpoint_with_response_stream(
            EndpointName="steady", Body=tgi_body(tokens=15)
        )
        assert payload_bytes(resp).count(b"data:") == 15
        delete_endpoint(sm, "steady")


def test_an_invoke_past_its_time_limit_is_a_model_error_and_the_instance_stays_in_rotation(
    tmp_path,
):
    # A non-streaming answer comes whole, so a slow model is not a hung one: the instance
    # keeps taking requests (even when both limits are equal, as by default).
    with running_gateway(
        tmp_path / "state", invoke_timeout=0.5, idle_timeout=0.5, health_interval=30
    ) as live:
        sm, smr = live.sm(), live.smr()
        create_synthetic_endpoint(sm, "slow-invoke", delay_ms=20)
        with pytest.raises(ClientError) as raised:
            smr.invoke_endpoint(EndpointName="slow-invoke", Body=tgi_body(tokens=100, stream=False))
        status, code, message = error_of(raised)
        assert (status, code) == (424, "ModelError")
        assert "timed out while waiting for a response" in message
        assert live.app.router.healthy_counts("slow-invoke") == {"AllTraffic": 1}
        answer = smr.invoke_endpoint(
            EndpointName="slow-invoke", Body=tgi_body(tokens=2, stream=False)
        )
        assert json.loads(answer["Body"].read())[0]["generated_text"]
        delete_endpoint(sm, "slow-invoke")
