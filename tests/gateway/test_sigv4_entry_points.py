"""The same malformed and forged requests through every way a request reaches SigV4
verification: `verify` with the gateway's header shape (lower-case names, repeats joined),
with the headers as the client wrote them, with http.server's multi-valued message, and
through a running gateway on both planes. Each gives the same AWS error code and wording,
whether its Authorization header is new or one seen before."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

import botocore.auth
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from streamhost.gateway.sigv4 import CredentialStore, SigV4Error, verify
from tests.harness import ACCESS_KEY, REGION, SECRET_KEY, running_gateway, tgi_body
from tests.harness import client as harness_client

TOKEN_KEY = "AKIDWITHTOKEN"
TOKEN_SECRET = "secret-of-the-key-with-a-token"
TOKEN = "the-session-token"
SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. "
    "Consult the service documentation for details."
)
PLANES = {
    "runtime": (
        "/endpoints/guarded/invocations-response-stream",
        tgi_body(),
        {"Content-Type": "application/json"},
    ),
    "control": (
        "/",
        b"{}",
        {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "SageMaker.ListEndpoints"},
    ),
}


def credential_store() -> CredentialStore:
    store = CredentialStore({ACCESS_KEY: SECRET_KEY})
    store.add(TOKEN_KEY, TOKEN_SECRET, session_token=TOKEN)
    return store


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    with running_gateway(
        tmp_path_factory.mktemp("sigv4-entry-points") / "state", credentials=credential_store()
    ) as live:
        yield live


@pytest.fixture(scope="module")
def web():
    """One HTTP client for the module (a new one per request loads the CA bundle each time)."""
    with httpx.Client(timeout=30) as client:
        yield client


@dataclass(frozen=True)
class Request:
    """A request as a client sends it: target, headers as written (Host included), body."""

    target: str
    headers: dict[str, str]
    body: bytes

    def without(self, name: str) -> Request:
        kept = {k: v for k, v in self.headers.items() if k.lower() != name.lower()}
        return replace(self, headers=kept)

    def with_header(self, name: str, value: str) -> Request:
        return replace(self, headers={**self.without(name).headers, name: value})

    def with_authorization(self, change: Callable[[str], str]) -> Request:
        return self.with_header("Authorization", change(self.headers["Authorization"]))


@contextlib.contextmanager
def signing_clock(at: datetime | None) -> Iterator[None]:
    """botocore signs as of `at` (it reads botocore.auth.get_current_datetime)."""
    if at is None:
        yield
        return
    original = botocore.auth.get_current_datetime
    botocore.auth.get_current_datetime = lambda: at.astimezone(timezone.utc).replace(tzinfo=None)
    try:
        yield
    finally:
        botocore.auth.get_current_datetime = original


@dataclass(frozen=True)
class Signer:
    """Signs requests for one plane of the gateway at `url`, as botocore's signer does."""

    url: str
    plane: str

    def request(
        self,
        *,
        at: datetime | None = None,
        key: str = ACCESS_KEY,
        secret: str = SECRET_KEY,
        token: str | None = None,
        region: str = REGION,
        service: str = "sagemaker",
        extra: dict[str, str] | None = None,
    ) -> Request:
        target, body, headers = PLANES[self.plane]
        request = AWSRequest(
            method="POST", url=self.url + target, data=body, headers={**headers, **(extra or {})}
        )
        with signing_clock(at):
            SigV4Auth(Credentials(key, secret, token), service, region).add_auth(request)
        signed = dict(request.headers.items())
        signed["Host"] = urlsplit(self.url).netloc
        return Request(target, signed, body)

    def boto3_request(self, secret: str = SECRET_KEY) -> Request:
        """The request a real boto3 client sends for this plane, stopped before it is sent."""

        class Captured(Exception):
            pass

        def capture(request: Any, **_: Any) -> None:
            raise Captured(request)

        client = harness_client(
            "sagemaker-runtime" if self.plane == "runtime" else "sagemaker", self.url, secret
        )
        client.meta.events.register("before-send", capture)
        with pytest.raises(Captured) as captured:
            if self.plane == "runtime":
                client.invoke_endpoint_with_response_stream(
                    EndpointName="guarded", Body=tgi_body(), ContentType="application/json"
                )
            else:
                client.list_endpoints()
        sent = captured.value.args[0]
        headers = {
            name: value.decode() if isinstance(value, bytes) else value
            for name, value in sent.headers.items()
        }
        headers["Host"] = urlsplit(sent.url).netloc
        return Request(urlsplit(sent.url).path, headers, sent.body or b"")


# -- the requests: each a way to build one, and the AWS error it must get ------------------


def _day_before(authorization: str) -> str:
    return re.sub(r"/(\d{8})/", lambda m: f"/{int(m.group(1)) - 1:08d}/", authorization, count=1)


CASES: list[Any] = [
    pytest.param(lambda s: s.boto3_request(), None, "", id="boto3-request-verifies"),
    pytest.param(lambda s: s.request(), None, "", id="botocore-signed-verifies"),
    pytest.param(
        lambda s: s.request(key=TOKEN_KEY, secret=TOKEN_SECRET, token=TOKEN),
        None,
        "",
        id="session-token-verifies",
    ),
    pytest.param(
        lambda s: s.request().without("Authorization"),
        "MissingAuthenticationTokenException",
        "Missing Authentication Token",
        id="no-authorization",
    ),
    pytest.param(
        lambda s: s.request().with_header("Authorization", ""),
        "MissingAuthenticationTokenException",
        "Missing Authentication Token",
        id="empty-authorization",
    ),
    pytest.param(
        lambda s: s.request().with_header("Authorization", "garbage"),
        "IncompleteSignatureException",
        "Authorization header requires 'Credential' parameter. "
        "Authorization header requires 'Signature' parameter. "
        "Authorization header requires 'SignedHeaders' parameter. Authorization=garbage",
        id="garbled-authorization",
    ),
    pytest.param(
        lambda s: s.request().with_authorization(
            lambda a: a.replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA512")
        ),
        "IncompleteSignatureException",
        "Unsupported AWS 'algorithm': 'AWS4-HMAC-SHA512'",
        id="other-algorithm",
    ),
    pytest.param(
        lambda s: s.request().with_authorization(lambda a: a.replace("/sagemaker/", "/")),
        "IncompleteSignatureException",
        "Credential must have exactly 5 slash-delimited elements",
        id="four-part-credential",
    ),
    pytest.param(
        lambda s: s.request().with_authorization(lambda a: a.replace("host;", "")),
        "IncompleteSignatureException",
        "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
        id="host-not-signed",
    ),
    pytest.param(
        lambda s: s.request().with_authorization(
            lambda a: a.rpartition("Signature=")[0] + "Signature="
        ),
        "IncompleteSignatureException",
        "Authorization header requires 'Signature' parameter. Authorization=AWS4-HMAC-SHA256 ",
        id="empty-signature",
    ),
    pytest.param(
        lambda s: s.request().with_authorization(lambda a: a[:-8] + "0123abcd"),
        "InvalidSignatureException",
        f"{SIGNATURE_MISMATCH}\n\nThe Canonical String for this request should have been\n",
        id="forged-signature",
    ),
    pytest.param(
        lambda s: s.request().without("X-Amz-Date"),
        "IncompleteSignatureException",
        "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
        id="no-date",
    ),
    pytest.param(
        lambda s: s.request().with_header("X-Amz-Date", "2024-01-01T00:00:00Z"),
        "IncompleteSignatureException",
        "Date must be in ISO-8601 'basic format'. Got '2024-01-01T00:00:00Z'. "
        "See http://en.wikipedia.org/wiki/ISO_8601",
        id="date-not-iso-basic",
    ),
    pytest.param(
        lambda s: s.request().with_header("X-Amz-Date", "20241301T000000Z"),
        "IncompleteSignatureException",
        "Date must be in ISO-8601 'basic format'. Got '20241301T000000Z'.",
        id="thirteenth-month",
    ),
    pytest.param(
        lambda s: s.request().with_header("X-Amz-Date", "20240101T240000Z"),
        "IncompleteSignatureException",
        "Date must be in ISO-8601 'basic format'. Got '20240101T240000Z'.",
        id="hour-24",
    ),
    pytest.param(
        lambda s: s.request().without("X-Amz-Date").with_header("Date", "yesterday"),
        "IncompleteSignatureException",
        "Date must be in RFC 1123 format when X-Amz-Date is absent. Got 'yesterday'.",
        id="date-header-not-rfc1123",
    ),
    pytest.param(
        lambda s: s.request(at=datetime.now(timezone.utc) - timedelta(minutes=20)),
        "InvalidSignatureException",
        "Signature expired: ",
        id="signed-20-minutes-ago",
    ),
    pytest.param(
        lambda s: s.request(at=datetime.now(timezone.utc) + timedelta(minutes=20)),
        "InvalidSignatureException",
        "Signature not yet current: ",
        id="signed-20-minutes-ahead",
    ),
    pytest.param(
        lambda s: s.request(region=""),
        "InvalidSignatureException",
        "Credential should be scoped to a valid region, not ''. ",
        id="no-region",
    ),
    pytest.param(
        lambda s: s.request(service="execute-api"),
        "InvalidSignatureException",
        "Credential should be scoped to correct service: 'sagemaker'. ",
        id="other-service",
    ),
    pytest.param(
        lambda s: s.request().with_authorization(lambda a: a.replace("aws4_request", "aws5")),
        "InvalidSignatureException",
        "Credential should be scoped with a valid terminator: 'aws4_request', not 'aws5'. ",
        id="other-terminator",
    ),
    pytest.param(
        lambda s: s.request().with_authorization(_day_before),
        "InvalidSignatureException",
        "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date",
        id="scope-of-another-day",
    ),
    pytest.param(
        lambda s: s.request(region="", service="execute-api"),
        "InvalidSignatureException",
        "Credential should be scoped to a valid region, not ''. "
        "Credential should be scoped to correct service: 'sagemaker'. ",
        id="two-scope-faults",
    ),
    pytest.param(
        lambda s: s.request(key="AKIDUNKNOWN"),
        "UnrecognizedClientException",
        "The security token included in the request is invalid.",
        id="unknown-key",
    ),
    pytest.param(
        lambda s: s.request(key=TOKEN_KEY, secret=TOKEN_SECRET, token=TOKEN).without(
            "X-Amz-Security-Token"
        ),
        "UnrecognizedClientException",
        "The security token included in the request is invalid.",
        id="session-token-missing",
    ),
    pytest.param(
        lambda s: s.request(key=TOKEN_KEY, secret=TOKEN_SECRET, token="another-token"),
        "UnrecognizedClientException",
        "The security token included in the request is invalid.",
        id="session-token-wrong",
    ),
    pytest.param(
        lambda s: s.boto3_request(secret="wrong"),
        "InvalidSignatureException",
        f"{SIGNATURE_MISMATCH}\n\nThe Canonical String for this request should have been\n",
        id="boto3-wrong-secret",
    ),
    pytest.param(
        lambda s: s.request(secret="wrong"),
        "InvalidSignatureException",
        f"{SIGNATURE_MISMATCH}\n\nThe Canonical String for this request should have been\n",
        id="wrong-secret",
    ),
    pytest.param(
        lambda s: replace(s.request(), body=s.request().body + b" "),
        "InvalidSignatureException",
        SIGNATURE_MISMATCH,
        id="body-changed",
    ),
    pytest.param(
        lambda s: s.request().with_header("Content-Type", "text/plain"),
        "InvalidSignatureException",
        SIGNATURE_MISMATCH,
        id="signed-header-changed",
    ),
    pytest.param(
        lambda s: replace(
            s.request(
                extra={"X-Amz-Content-SHA256": hashlib.sha256(PLANES[s.plane][1]).hexdigest()}
            ),
            body=PLANES[s.plane][1] + b" ",
        ),
        "InvalidSignatureException",
        "The provided 'x-amz-content-sha256' header does not match what was computed.",
        id="payload-hash-mismatch",
    ),
    pytest.param(
        lambda s: s.request(extra={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"}),
        "InvalidSignatureException",
        "This endpoint requires a signed payload; "
        "'x-amz-content-sha256: UNSIGNED-PAYLOAD' is not accepted.",
        id="unsigned-payload",
    ),
]


# -- the entry points: each gives ("verified", "") or (error code, message) ---------------

Outcome = tuple[str, str]


def _verified_in_process(request: Request, headers: Any, store: CredentialStore, **kw) -> Outcome:
    try:
        verify("POST", request.target, headers, request.body, store=store, **kw)
    except SigV4Error as error:
        return error.code, error.message
    return "verified", ""


def as_the_gateway_hands_it(request: Request, store: CredentialStore) -> Outcome:
    lowered = {name.lower(): value for name, value in request.headers.items()}
    return _verified_in_process(request, lowered, store, lowercased=True)


def as_the_client_wrote_it(request: Request, store: CredentialStore) -> Outcome:
    return _verified_in_process(request, request.headers, store)


def as_http_server_hands_it(request: Request, store: CredentialStore) -> Outcome:
    # BaseHTTPRequestHandler.headers: an email message, names as sent, values per line.
    lines = "".join(f"{name}: {value}\r\n" for name, value in request.headers.items())
    message = http.client.parse_headers(io.BytesIO(lines.encode("latin-1") + b"\r\n"))
    return _verified_in_process(request, message, store)


def through_the_gateway(request: Request, url: str, web: httpx.Client) -> Outcome:
    # httpx sets the length of what is sent (a changed body differs in size).
    headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
    response = web.post(url + request.target, content=request.body, headers=headers)
    if response.status_code != 403:
        return "verified", ""
    code = response.headers["x-amzn-errortype"]
    document = response.json()
    assert document["__type"] == code
    return code, document["message"]


def _without_the_clock(outcome: Outcome, request: Request) -> Outcome:
    """The outcome with every time in its message that is not the request's own (the
    clock's, in a skew error) masked: calls a second apart must compare equal."""
    own = {value for name, value in request.headers.items() if name.lower() == "x-amz-date"}
    code, message = outcome
    masked = re.sub(
        r"\d{8}T\d{6}Z", lambda m: m.group(0) if m.group(0) in own else "<now>", message
    )
    return code, masked


@pytest.mark.parametrize("plane", sorted(PLANES))
@pytest.mark.parametrize(("build", "code", "wording"), CASES)
def test_every_entry_point_gives_the_same_answer(gateway, web, plane, build, code, wording):
    request = build(Signer(gateway.url, plane))
    store = credential_store()
    outcomes: dict[str, list[Outcome]] = {}
    # Twice each, the first call seeing this Authorization header new (in this store and in
    # the gateway's) and every later one seeing it again.
    for _ in range(2):
        for name, outcome in (
            ("gateway's shape", as_the_gateway_hands_it(request, store)),
            ("client's shape", as_the_client_wrote_it(request, store)),
            ("http.server's shape", as_http_server_hands_it(request, store)),
            ("running gateway", through_the_gateway(request, gateway.url, web)),
        ):
            outcomes.setdefault(name, []).append(_without_the_clock(outcome, request))
    first = outcomes["gateway's shape"][0]
    assert all(outcome == first for seen in outcomes.values() for outcome in seen), outcomes
    if code is None:
        assert first == ("verified", "")
    else:
        assert first[0] == code
        assert first[1].startswith(wording), first[1]
