"""SigV4 through a real gateway: tampered, stale, replayed or incomplete requests get the
AWS error for the fault on both planes, and none of them reaches an instance.
(tests/gateway/test_sigv4.py covers the verifier itself; a wrong secret and a missing
signature through the gateway are in tests/gateway/test_runtime_errors.py.)"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone

import botocore.auth
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.harness import (
    ACCESS_KEY,
    REGION,
    SECRET_KEY,
    GatewayThread,
    assert_no_model_servers,
    create_synthetic_endpoint,
    delete_endpoint,
    tgi_body,
)

from .streaming import instance_metric

pytestmark = pytest.mark.reliability

RUNTIME = "/endpoints/guarded/invocations-response-stream"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    live = GatewayThread(tmp_path_factory.mktemp("sigv4") / "state").start()
    create_synthetic_endpoint(live.sm(), "guarded")
    yield live
    delete_endpoint(live.sm(), "guarded")
    live.stop()
    assert_no_model_servers()


def planes() -> list:
    control = ("/", b"{}", {"X-Amz-Target": "SageMaker.ListEndpoints"})
    runtime = (RUNTIME, tgi_body(tokens=3), {})
    return [pytest.param(*control, id="control"), pytest.param(*runtime, id="runtime")]


def signed(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    at: datetime | None = None,
    key: str = ACCESS_KEY,
    region: str = REGION,
    service: str = "sagemaker",
) -> dict[str, str]:
    """The headers botocore signs `body` with, as of `at` (default: now)."""
    request = AWSRequest(
        method="POST",
        url=url,
        data=body,
        headers={"Content-Type": "application/x-amz-json-1.1", **headers},
    )
    signer = SigV4Auth(Credentials(key, SECRET_KEY), service, region)
    if at is None:
        signer.add_auth(request)
    else:
        pinned = at.astimezone(timezone.utc).replace(tzinfo=None)
        original = botocore.auth.get_current_datetime
        botocore.auth.get_current_datetime = lambda: pinned
        try:
            signer.add_auth(request)
        finally:
            botocore.auth.get_current_datetime = original
    return dict(request.prepare().headers)


def send(gateway, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    # httpx sets the length of what is actually sent (a tampered body differs in size).
    headers = without(headers, "Content-Length")
    return httpx.post(gateway.url + path, content=body, headers=headers, timeout=30)


def refused(response: httpx.Response, code: str, *needles: str) -> None:
    assert response.status_code == 403, response.text
    assert response.headers["x-amzn-errortype"] == code
    document = response.json()
    assert document["__type"] == code
    for needle in needles:
        assert needle in document["message"]


def served(gateway) -> float:
    (record,) = gateway.app.store.list_instances("guarded")
    return instance_metric(record, "tgi_request_count")


def without(headers: dict[str, str], name: str) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() != name.lower()}


@pytest.mark.parametrize(("path", "body", "extra"), planes())
def test_a_body_changed_after_signing_is_refused(gateway, path, body, extra):
    before = served(gateway)
    headers = signed(gateway.url + path, body, extra)
    refused(send(gateway, path, body + b" ", headers), "InvalidSignatureException")
    hashed = signed(
        gateway.url + path,
        body,
        {**extra, "X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest()},
    )
    refused(
        send(gateway, path, body + b" ", hashed),
        "InvalidSignatureException",
        "'x-amz-content-sha256' header does not match",
    )
    assert served(gateway) == before
    assert send(gateway, path, body, headers).status_code == 200  # the original still works


@pytest.mark.parametrize(("path", "body", "extra"), planes())
def test_a_request_signed_too_long_ago_or_ahead_is_refused(gateway, path, body, extra):
    before = served(gateway)
    now = datetime.now(timezone.utc)
    stale = signed(gateway.url + path, body, extra, at=now - timedelta(minutes=6))
    refused(send(gateway, path, body, stale), "InvalidSignatureException", "Signature expired")
    ahead = signed(gateway.url + path, body, extra, at=now + timedelta(minutes=6))
    refused(
        send(gateway, path, body, ahead), "InvalidSignatureException", "Signature not yet current"
    )
    within = signed(gateway.url + path, body, extra, at=now - timedelta(minutes=4))
    assert send(gateway, path, body, within).status_code == 200
    assert served(gateway) == before + (1 if path == RUNTIME else 0)


@pytest.mark.parametrize(("path", "body", "extra"), planes())
def test_a_replay_works_inside_the_window_only(gateway, path, body, extra):
    # As AWS: a captured request can be replayed until its signature is five minutes old.
    # Replaying it later is the same as sending a stale signature.
    captured = signed(gateway.url + path, body, extra)
    assert send(gateway, path, body, captured).status_code == 200
    assert send(gateway, path, body, captured).status_code == 200
    old = signed(
        gateway.url + path, body, extra, at=datetime.now(timezone.utc) - timedelta(hours=1)
    )
    refused(send(gateway, path, body, old), "InvalidSignatureException", "Signature expired")


@pytest.mark.parametrize(("path", "body", "extra"), planes())
def test_missing_or_foreign_signature_parts_get_their_aws_errors(gateway, path, body, extra):
    before = served(gateway)
    url = gateway.url + path
    headers = signed(url, body, extra)
    refused(
        send(gateway, path, body, without(headers, "X-Amz-Date")),
        "IncompleteSignatureException",
        "requires existence of either a 'X-Amz-Date' or a 'Date' header",
    )
    auth = headers["Authorization"]
    refused(
        send(gateway, path, body, {**headers, "Authorization": auth.split(", Signature=")[0]}),
        "IncompleteSignatureException",
        "requires 'Signature' parameter",
    )
    refused(
        send(gateway, path, body, {**headers, "Authorization": "AWS4-HMAC-SHA1" + auth[16:]}),
        "IncompleteSignatureException",
        "Unsupported AWS 'algorithm'",
    )
    refused(
        send(gateway, path, body, signed(url, body, extra, key="AKIDNOBODYKNOWS")),
        "UnrecognizedClientException",
    )
    refused(
        send(gateway, path, body, signed(url, body, extra, service="s3")),
        "InvalidSignatureException",
        "Credential should be scoped to correct service: 'sagemaker'",
    )
    refused(
        send(gateway, path, body, without(headers, "Authorization")),
        "MissingAuthenticationTokenException",
    )
    # A signed header that does not arrive changes the canonical request.
    refused(
        send(gateway, path, body, {**headers, "Content-Type": "text/plain"}),
        "InvalidSignatureException",
        "The request signature we calculated does not match",
    )
    assert served(gateway) == before
