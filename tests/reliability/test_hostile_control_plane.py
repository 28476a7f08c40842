"""Fuzzing the control plane over HTTP: signed JSON 1.1 requests generated from botocore's
`sagemaker` model (valid, and bent out of shape at any depth) never get a 5xx, and the
gateway keeps serving. tests/gateway/test_validation.py fuzzes the same code in-process."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamhost.gateway.control import OPERATIONS
from tests.harness import GatewayThread, assert_no_model_servers, delete_endpoint, signed_headers

from .shapes import operation_model, operations, request
from .streaming import SOAK

pytestmark = pytest.mark.reliability

EXAMPLES = 2000 if SOAK else 250
JSON_11 = "application/x-amz-json-1.1"
IMPLEMENTED = sorted(OPERATIONS)
ELSEWHERE = [name for name in operations() if name not in OPERATIONS]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    live = GatewayThread(tmp_path_factory.mktemp("fuzz") / "state").start()
    yield live
    sm = live.sm()
    for endpoint in sm.list_endpoints(MaxResults=100)["Endpoints"]:
        delete_endpoint(sm, endpoint["EndpointName"])
    live.stop()
    assert_no_model_servers()


@pytest.fixture(scope="module")
def http():
    with httpx.Client(timeout=30) as session:
        yield session


def call(
    http: httpx.Client, url: str, target: str, body: bytes, content_type: str = JSON_11
) -> httpx.Response:
    headers = {"Content-Type": content_type, "X-Amz-Target": target}
    return http.post(url + "/", content=body, headers=signed_headers(url + "/", body, headers))


def assert_aws_answer(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text[:500]
    assert response.headers.get("x-amzn-requestid")
    document = response.json()
    if response.status_code >= 400:
        assert isinstance(document.get("__type"), str) and document["__type"]
        assert isinstance(document.get("message"), str)


def encode(body: Any) -> bytes:
    return json.dumps(body).encode()  # Python's encoder: integers of any size


fuzz = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)


@fuzz
@given(data=st.data())
def test_requests_shaped_by_the_service_model_never_get_a_5xx(gateway, http, data):
    name = data.draw(st.sampled_from(IMPLEMENTED) | st.sampled_from(ELSEWHERE), label="op")
    body = data.draw(request(operation_model(name), bent=data.draw(st.booleans())))
    assert_aws_answer(call(http, gateway.url, f"SageMaker.{name}", encode(body)))


@fuzz
@given(
    target=st.one_of(
        st.sampled_from([f"SageMaker.{name}" for name in IMPLEMENTED]),
        # Any value an HTTP client can send: h11 refuses surrounding whitespace itself.
        st.text(max_size=300).filter(lambda t: t.isprintable() and t.isascii() and t == t.strip()),
    ),
    body=st.one_of(
        st.binary(max_size=2000),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=50),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(st.text(max_size=8), inner, max_size=4)
            ),
            max_leaves=40,
        ).map(encode),
        st.just(b"[" * 100_000),
        st.just(b'{"EndpointName": "' + b"a" * 3_000_000 + b'"}'),
    ),
    content_type=st.sampled_from([JSON_11, "application/json", "text/plain", ""]),
)
def test_any_bytes_any_target_never_get_a_5xx(gateway, http, target, body, content_type):
    assert_aws_answer(call(http, gateway.url, target, body, content_type))


def test_the_gateway_still_serves_after_the_fuzzing(gateway, http):
    assert http.get(gateway.url + "/ping").status_code == 200
    gateway.sm().list_endpoints()
    over = b'{"x": "' + b"a" * (5 * 1024 * 1024) + b'"}'
    response = call(http, gateway.url, "SageMaker.ListEndpoints", over)
    assert (response.status_code, response.json()["__type"]) == (413, "SerializationException")


def test_deeply_nested_json_is_a_serialization_error_not_a_crash(gateway, http):
    for depth in (1000, 100_000):
        body = b'{"NameContains": ' + b"[" * depth + b"]" * depth + b"}"
        response = call(http, gateway.url, "SageMaker.ListEndpoints", body)
        assert (response.status_code, response.json()["__type"]) == (
            400,
            "SerializationException",
        )
    assert http.get(gateway.url + "/ping").status_code == 200
