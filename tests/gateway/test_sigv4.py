"""SigV4 verification against requests signed by botocore exactly as boto3 signs them."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler
from urllib.parse import quote, urlsplit

import botocore.auth
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamhost.client.boto import boto3_session
from streamhost.gateway import sigv4
from streamhost.gateway.errors import AwsError
from streamhost.gateway.settings import SettingsError, build_settings
from streamhost.gateway.sigv4 import (
    ClockSkewException,
    CredentialConflict,
    CredentialsFileError,
    CredentialStore,
    IncompleteSignatureException,
    InvalidSignatureException,
    MissingAuthenticationTokenException,
    PayloadHashMismatchException,
    SigV4Error,
    UnrecognizedClientException,
    verify,
)
from tests.harness import examples

from ..loopback import LoopbackHTTPServer

ACCESS_KEY = "AKIDEXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
ENDPOINT_URL = "http://127.0.0.1:8080"
SIGNATURE_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. "
    "Consult the service documentation for details."
)


@dataclass(frozen=True)
class SignedRequest:
    """A request as the gateway receives it: raw target, headers (Host included), body."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes

    def verify(self, store: CredentialStore, **kwargs):
        return verify(self.method, self.target, self.headers, self.body, store=store, **kwargs)


class Captured(Exception):
    """Raised from botocore's before-send hook to stop a call once it is signed."""

    def __init__(self, request) -> None:
        super().__init__()
        self.request = request


def _capture(request, **_kwargs):
    raise Captured(request)


def received(method: str, url: str, headers, body: bytes | None) -> SignedRequest:
    """What the server sees: urllib3 adds Host from the URL (port kept unless default)."""
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    as_text = {
        name: value.decode() if isinstance(value, bytes) else value
        for name, value in headers.items()
    }
    as_text.setdefault("Host", parts.netloc)
    return SignedRequest(method, target, as_text, body or b"")


def boto3_request(
    service: str,
    call: Callable,
    *,
    secret_key: str = SECRET_KEY,
    access_key: str = ACCESS_KEY,
    session_token: str | None = None,
) -> SignedRequest:
    """Sign a request with a real boto3 client and return it as it would go on the wire."""
    session = boto3_session(
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        aws_session_token=session_token,
        region_name="eu-west-1",
    )
    client = session.client(service, endpoint_url=ENDPOINT_URL)
    client.meta.events.register("before-send", _capture)
    with pytest.raises(Captured) as captured:
        call(client)
    request = captured.value.request
    return received(request.method, request.url, request.headers, request.body)


def botocore_signed(
    url: str,
    *,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    service: str = "sagemaker",
) -> SignedRequest:
    """Sign an arbitrary request with botocore's SigV4Auth, as boto3 would sign it."""
    request = AWSRequest(method="POST", url=url, data=body, headers=headers or {})
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), service, "us-east-1").add_auth(request)
    return received(request.method, request.url, request.headers, body)


def invoke_endpoint(client) -> None:
    client.invoke_endpoint(
        EndpointName="my endpoint/ünïcode:1",
        Body=b'{"inputs": "Hello"}',
        ContentType="application/json",
        Accept="application/json",
        CustomAttributes="trace=1",
    )


def create_model(client) -> None:
    client.create_model(
        ModelName="tiny",
        ExecutionRoleArn="arn:aws:iam::123456789012:role/streamhost",
        PrimaryContainer={"Image": "streamhost:latest", "Environment": {"HF_MODEL_ID": "tiny"}},
    )


@pytest.fixture
def store() -> CredentialStore:
    return CredentialStore({ACCESS_KEY: SECRET_KEY})


@pytest.fixture
def frozen_clock(monkeypatch):
    """Pin the time botocore signs with (it reads botocore.auth.get_current_datetime)."""
    signed_at = datetime(2024, 1, 1, 0, 0, 0)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: signed_at)
    return signed_at.replace(tzinfo=timezone.utc)


def test_runtime_invoke_endpoint_signed_by_boto3_verifies(store):
    request = boto3_request("sagemaker-runtime", invoke_endpoint)
    assert "%C3%BC" in request.target  # the endpoint name really needed encoding
    principal = request.verify(store)
    assert principal.access_key_id == ACCESS_KEY
    assert (principal.region, principal.service) == ("eu-west-1", "sagemaker")


def test_control_plane_create_model_signed_by_boto3_verifies(store):
    request = boto3_request("sagemaker", create_model)
    assert request.headers["X-Amz-Target"] == "SageMaker.CreateModel"
    assert request.verify(store).service == "sagemaker"


def test_query_string_is_canonicalised_like_botocore(store):
    url = f"{ENDPOINT_URL}/endpoints/my%20ep/invocations?z=1&a=2&a=1&slash=%2F&empty=&flag"
    request = botocore_signed(url, body=b"{}")
    assert request.verify(store).access_key_id == ACCESS_KEY


def test_query_string_with_other_escaping_style_still_verifies(store):
    request = botocore_signed(f"{ENDPOINT_URL}/path?name=a%3Ab&tilde=x~y")
    # Same parameters, escaped differently by some other client on the way.
    relaxed = replace(request, target="/path?tilde=x%7Ey&name=a:b")
    assert relaxed.verify(store).access_key_id == ACCESS_KEY


def test_date_header_instead_of_x_amz_date_verifies(store):
    request = botocore_signed(
        f"{ENDPOINT_URL}/", body=b"{}", headers={"Date": "Mon, 01 Jan 2024 00:00:00 GMT"}
    )
    assert "X-Amz-Date" not in request.headers
    assert request.verify(store)


def test_wrong_secret_is_invalid_signature(store):
    request = boto3_request("sagemaker-runtime", invoke_endpoint, secret_key="not-the-secret")
    with pytest.raises(InvalidSignatureException) as raised:
        request.verify(store)
    error = raised.value
    assert error.code == "InvalidSignatureException"
    assert error.message.startswith(SIGNATURE_MISMATCH)
    assert "The Canonical String for this request should have been" in error.message


def test_a_forged_signature_fails_after_the_same_credential_scope_verified(store):
    # The parsed Authorization header is remembered up to its signature: a request that
    # repeats a verified one's scope and signed headers with another signature must fail.
    request = boto3_request("sagemaker-runtime", invoke_endpoint)
    assert request.verify(store)
    authorization = request.headers["Authorization"]
    prefix, _, signature = authorization.rpartition("Signature=")
    forged = "0" * len(signature) if signature != "0" * len(signature) else "1" * len(signature)
    headers = {**request.headers, "Authorization": prefix + "Signature=" + forged}
    with pytest.raises(InvalidSignatureException):
        replace(request, headers=headers).verify(store)
    assert request.verify(store)  # and the genuine one still verifies
    headers = {**request.headers, "Authorization": prefix + "Signature="}
    with pytest.raises(IncompleteSignatureException, match="requires 'Signature'"):
        replace(request, headers=headers).verify(store)


def test_headers_given_lower_case_verify_as_given(store):
    request = boto3_request("sagemaker-runtime", invoke_endpoint)
    lowered = {name.lower(): value for name, value in request.headers.items()}
    assert request.verify(store, lowercased=False)
    assert replace(request, headers=lowered).verify(store, lowercased=True)


def test_altered_body_is_invalid_signature(store):
    request = boto3_request("sagemaker-runtime", invoke_endpoint)
    with pytest.raises(InvalidSignatureException):
        replace(request, body=b'{"inputs": "Goodbye"}').verify(store)


def test_altered_host_is_invalid_signature(store):
    request = boto3_request("sagemaker", create_model)
    with pytest.raises(InvalidSignatureException):
        replace(request, headers={**request.headers, "Host": "127.0.0.1:9090"}).verify(store)


def test_altered_path_is_invalid_signature(store):
    request = boto3_request("sagemaker-runtime", invoke_endpoint)
    other = request.target.replace("my%20endpoint", "other")
    with pytest.raises(InvalidSignatureException):
        replace(request, target=other).verify(store)


def test_body_not_matching_signed_content_sha256_is_payload_hash_mismatch(store):
    body = b'{"a": 1}'
    request = botocore_signed(
        f"{ENDPOINT_URL}/",
        body=body,
        headers={"X-Amz-Content-SHA256": botocore.auth.sha256(body).hexdigest()},
    )
    assert request.verify(store)
    with pytest.raises(PayloadHashMismatchException) as raised:
        replace(request, body=b'{"a": 2}').verify(store)
    assert raised.value.code == "InvalidSignatureException"
    assert "x-amz-content-sha256" in raised.value.message


def test_unsigned_payload_is_refused_unless_allowed(store):
    request = botocore_signed(
        f"{ENDPOINT_URL}/", body=b"{}", headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"}
    )
    with pytest.raises(PayloadHashMismatchException):
        request.verify(store)
    assert request.verify(store, allow_unsigned_payload=True)


def test_unknown_access_key_is_unrecognized_client(store):
    request = boto3_request("sagemaker", create_model, access_key="AKIDUNKNOWN")
    with pytest.raises(UnrecognizedClientException) as raised:
        request.verify(store)
    assert raised.value.code == "UnrecognizedClientException"
    assert raised.value.message == "The security token included in the request is invalid."


def test_no_authorization_header_is_missing_authentication_token(store):
    with pytest.raises(MissingAuthenticationTokenException) as raised:
        verify("POST", "/", {"Host": "127.0.0.1:8080"}, b"{}", store=store)
    assert raised.value.code == "MissingAuthenticationTokenException"
    assert raised.value.message == "Missing Authentication Token"


def test_auth_errors_are_aws_errors_with_sagemaker_status():
    for error in (
        MissingAuthenticationTokenException(),
        UnrecognizedClientException(),
        InvalidSignatureException(),
        IncompleteSignatureException("x"),
        ClockSkewException("x"),
    ):
        assert isinstance(error, AwsError)
        assert error.status == 403
        assert error.to_response() == {"__type": error.code, "message": error.message}


def test_request_signed_20_minutes_ago_has_expired(store, frozen_clock):
    request = boto3_request("sagemaker-runtime", invoke_endpoint)
    with pytest.raises(ClockSkewException) as raised:
        request.verify(store, now=frozen_clock + timedelta(minutes=20))
    assert raised.value.code == "InvalidSignatureException"
    assert raised.value.message == (
        "Signature expired: 20240101T000000Z is now earlier than 20240101T001500Z "
        "(20240101T002000Z - 5 min.)"
    )


def test_request_signed_20_minutes_ahead_is_not_yet_current(store, frozen_clock):
    request = boto3_request("sagemaker", create_model)
    with pytest.raises(ClockSkewException) as raised:
        request.verify(store, now=frozen_clock - timedelta(minutes=20))
    assert raised.value.message == (
        "Signature not yet current: 20240101T000000Z is still later than 20231231T234500Z "
        "(20231231T234000Z + 5 min.)"
    )


def test_request_within_skew_verifies(store, frozen_clock):
    request = boto3_request("sagemaker", create_model)
    assert request.verify(store, now=frozen_clock + timedelta(minutes=4, seconds=59))
    assert request.verify(store, now=frozen_clock - timedelta(minutes=4), max_skew=300)


def test_credential_scoped_to_another_service_is_invalid_signature(store):
    request = botocore_signed(f"{ENDPOINT_URL}/", body=b"{}", service="execute-api")
    with pytest.raises(InvalidSignatureException) as raised:
        request.verify(store)
    assert raised.value.message == "Credential should be scoped to correct service: 'sagemaker'. "
    assert request.verify(store, service=None).service == "execute-api"


def test_malformed_authorization_is_incomplete_signature(store):
    headers = {"Host": "127.0.0.1:8080", "Authorization": "AWS4-HMAC-SHA256 Credential=AKID"}
    with pytest.raises(IncompleteSignatureException) as raised:
        verify("POST", "/", headers, b"", store=store)
    assert raised.value.message == (
        "Authorization header requires 'Signature' parameter. "
        "Authorization header requires 'SignedHeaders' parameter. "
        "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. "
        "Authorization=AWS4-HMAC-SHA256 Credential=AKID"
    )


def test_headers_are_matched_case_insensitively(store):
    request = boto3_request("sagemaker", create_model)
    lowered = {name.lower(): value for name, value in request.headers.items()}
    assert replace(request, headers=lowered).verify(store)


def test_session_token_must_match_when_the_store_has_one():
    store = CredentialStore()
    store.add(ACCESS_KEY, SECRET_KEY, session_token="token-1")
    good = boto3_request("sagemaker", create_model, session_token="token-1")
    assert "X-Amz-Security-Token" in good.headers
    assert good.verify(store)
    wrong = boto3_request("sagemaker", create_model, session_token="token-2")
    with pytest.raises(UnrecognizedClientException):
        wrong.verify(store)


CREDENTIALS_FILE = """\
[default]
aws_access_key_id = AKIDDEFAULT
aws_secret_access_key = default/secret+with%percent

[profile-two]
aws_access_key_id=AKIDTWO
aws_secret_access_key=second-secret

[region-only]
region = us-east-1
"""


def test_every_profile_of_a_credentials_file_is_accepted(tmp_path):
    path = tmp_path / "credentials"
    path.write_text(CREDENTIALS_FILE)
    store = CredentialStore.from_shared_credentials_file(path)
    assert len(store) == 2
    default = boto3_request(
        "sagemaker",
        create_model,
        access_key="AKIDDEFAULT",
        secret_key="default/secret+with%percent",
    )
    two = boto3_request(
        "sagemaker-runtime", invoke_endpoint, access_key="AKIDTWO", secret_key="second-secret"
    )
    assert default.verify(store).profile == "default"
    assert two.verify(store).profile == "profile-two"


def test_credentials_file_without_key_pairs_is_an_error(tmp_path):
    path = tmp_path / "credentials"
    path.write_text("[default]\nregion = us-east-1\n")
    with pytest.raises(CredentialsFileError):
        CredentialStore.from_shared_credentials_file(path)
    with pytest.raises(CredentialsFileError):
        CredentialStore.from_shared_credentials_file(tmp_path / "missing")


def test_one_key_with_two_secrets_is_a_conflict():
    store = CredentialStore({ACCESS_KEY: SECRET_KEY})
    store.add(ACCESS_KEY, SECRET_KEY)  # the same pair again is fine
    with pytest.raises(CredentialConflict):
        store.add(ACCESS_KEY, "another-secret")


class VerifyingHandler(BaseHTTPRequestHandler):
    """Verifies each POST with sigv4.verify and reports what it saw, as JSON."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        store = self.server.store  # type: ignore[attr-defined]
        try:
            principal = verify(self.command, self.path, self.headers, body, store=store)
        except SigV4Error as error:
            status = error.status
            payload = error.to_response()
            extra = {"x-amzn-ErrorType": error.code}
        else:
            status, extra = 200, {}
            payload = {
                "Endpoints": [],
                "AccessKeyId": principal.access_key_id,
                "Host": self.headers["Host"],
                "Path": self.path,
            }
        encoded = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(encoded)))
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(encoded)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def verifying_server(store):
    server = LoopbackHTTPServer(VerifyingHandler)
    server.store = store  # type: ignore[attr-defined]
    yield server.start().url
    server.stop()


def real_client(service: str, endpoint_url: str, secret_key: str = SECRET_KEY):
    return boto3_session().client(
        service,
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=secret_key,
        config=Config(retries={"max_attempts": 1}),
    )


def test_boto3_over_a_real_socket_verifies(verifying_server):
    runtime = real_client("sagemaker-runtime", verifying_server)
    response = runtime.invoke_endpoint(
        EndpointName="my endpoint/ü", Body=b'{"inputs": "hi"}', ContentType="application/json"
    )
    seen = json.loads(response["Body"].read())
    assert seen["AccessKeyId"] == ACCESS_KEY
    assert seen["Host"] == verifying_server.removeprefix("http://")  # the port is in Host
    assert seen["Path"] == "/endpoints/my%20endpoint%2F%C3%BC/invocations"

    control = real_client("sagemaker", verifying_server)
    assert control.list_endpoints()["Endpoints"] == []


def test_boto3_with_wrong_secret_gets_invalid_signature_over_a_real_socket(verifying_server):
    runtime = real_client("sagemaker-runtime", verifying_server, secret_key="wrong")
    with pytest.raises(ClientError) as raised:
        runtime.invoke_endpoint(EndpointName="default", Body=b"{}")
    error = raised.value.response["Error"]
    assert error["Code"] == "InvalidSignatureException"
    assert error["Message"].startswith(SIGNATURE_MISMATCH)

    control = real_client("sagemaker", verifying_server, secret_key="wrong")
    with pytest.raises(ClientError) as raised:
        control.list_endpoints()
    assert raised.value.response["Error"]["Code"] == "InvalidSignatureException"


_PATH_SEGMENT = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="/?#"), min_size=0, max_size=12
)
_QUERY_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=8)
_HEADER_VALUE = st.lists(
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=6),
    min_size=1,
    max_size=3,
).flatmap(  # words with runs of spaces between them, which SigV4 squeezes to one
    lambda words: st.lists(
        st.sampled_from([" ", "  ", "   "]), min_size=len(words) - 1, max_size=len(words) - 1
    ).map(lambda gaps: "".join(w + g for w, g in zip(words, [*gaps, ""], strict=True)))
)


@settings(
    max_examples=examples(150),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    segments=st.lists(_PATH_SEGMENT, min_size=1, max_size=4),
    query=st.lists(st.tuples(_QUERY_TEXT, _QUERY_TEXT), max_size=4),
    extra=st.dictionaries(
        st.sampled_from(["x-amzn-sagemaker-custom-attributes", "accept", "x-amz-meta-a", "b-c"]),
        _HEADER_VALUE,
        max_size=3,
    ),
    body=st.binary(max_size=64),
)
def test_any_request_botocore_signs_verifies(store, segments, query, extra, body):
    # The signature is recomputed from the request as it arrived: whatever path, query,
    # headers and body botocore signs, it must check out, and a changed byte must not.
    path = "/" + "/".join(quote(segment, safe="") for segment in segments)
    query_string = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in query)
    url = ENDPOINT_URL + path + (f"?{query_string}" if query_string else "")
    signed = botocore_signed(url, body=body, headers={"Content-Type": "application/json", **extra})
    # Twice: the first call parses the Authorization header, the second finds it remembered;
    # either way every check runs, and any changed byte of body, path or a signed header
    # fails (a value differing only in the spaces SigV4 trims is the same value).
    for _ in range(2):
        assert signed.verify(store).access_key_id == ACCESS_KEY
        with pytest.raises(InvalidSignatureException):
            replace(signed, body=body + b"!").verify(store)
        with pytest.raises(InvalidSignatureException):
            replace(signed, target=path + "x").verify(store)
        changed = {**signed.headers, "Content-Type": "application/json "}
        assert replace(signed, headers=changed).verify(store)
        changed = {**signed.headers, "Content-Type": "application/jsonx"}
        with pytest.raises(InvalidSignatureException):
            replace(signed, headers=changed).verify(store)


def test_a_remembered_scope_still_has_its_clock_window_checked(store, frozen_clock):
    request = boto3_request("sagemaker-runtime", invoke_endpoint)
    assert request.verify(store, now=frozen_clock)  # the scope is remembered from here on
    assert request.verify(store, now=frozen_clock + timedelta(minutes=4))
    with pytest.raises(ClockSkewException, match="Signature expired"):
        request.verify(store, now=frozen_clock + timedelta(minutes=6))
    with pytest.raises(ClockSkewException, match="Signature not yet current"):
        request.verify(store, now=frozen_clock - timedelta(minutes=6))


def test_a_remembered_scope_still_has_a_declared_payload_hash_checked(store):
    body = b"{}"
    hashed = botocore_signed(
        ENDPOINT_URL + "/endpoints/e/invocations",
        body=body,
        headers={"X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest()},
    )
    assert hashed.verify(store)
    assert hashed.verify(store)
    with pytest.raises(PayloadHashMismatchException, match="does not match what was computed"):
        replace(hashed, body=b"{ }").verify(store)


def test_the_installed_botocore_passes_the_start_up_check():
    sigv4.check_botocore()  # what CredentialStore() runs; the gateway builds one at start-up


def test_a_botocore_without_the_private_signing_method_fails_the_start_up_check(monkeypatch):
    monkeypatch.delattr(SigV4Auth, "_sign")
    with pytest.raises(sigv4.BotocoreUnsupported) as raised:
        CredentialStore({ACCESS_KEY: SECRET_KEY})
    message = str(raised.value)
    assert "\n" not in message
    assert f"botocore {botocore.__version__}" in message
    assert "SigV4Auth._sign(key, msg, hex) is gone or changed" in message


def test_a_botocore_whose_private_method_changed_shape_fails_the_start_up_check(monkeypatch):
    monkeypatch.setattr(SigV4Auth, "_normalize_url_path", lambda self, path, *, strict: path)
    with pytest.raises(sigv4.BotocoreUnsupported, match=r"_normalize_url_path\(path\)"):
        sigv4.check_botocore()


def test_a_botocore_that_signs_differently_fails_the_start_up_check(monkeypatch):
    # Same name and parameters, other results: what _ClientSigner keeps would not be
    # botocore's signature any more.
    def sign_upper(self, key, msg, hex=False):
        digest = hmac.new(key, msg.encode(), hashlib.sha256)
        return digest.hexdigest().upper() if hex else digest.digest()

    monkeypatch.setattr(SigV4Auth, "_sign", sign_upper)
    with pytest.raises(sigv4.BotocoreUnsupported, match="no longer signs as it did"):
        sigv4.check_botocore()


def test_a_gateway_on_an_unsupported_botocore_refuses_to_start_in_one_line(monkeypatch):
    monkeypatch.delattr(SigV4Auth, "_sign")
    with pytest.raises(SettingsError) as raised:  # `streamhost gateway` prints it, exits 2
        build_settings(
            environ={"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY},
            state="sqlite://",
        )
    assert "\n" not in str(raised.value)
    assert str(raised.value).startswith(f"botocore {botocore.__version__} cannot be used")
