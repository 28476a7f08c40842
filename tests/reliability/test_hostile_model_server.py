"""Fuzzing the model server's HTTP APIs with schemathesis against its own OpenAPI document
(`GET /openapi.json`): no input gets a 5xx, and every answer is one the document lists,
with the content type and body shape it gives. Both personalities, as behind a gateway
(the instance secret on every request); without the secret, everything that runs the
model is refused."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.routing import WebSocketRoute

from streamhost.server.openapi import openapi_document
from tests.harness import start_model_server

from .streaming import SOAK

pytestmark = pytest.mark.reliability

SECRET = "instance-secret"
SECRET_HEADER = "x-streamhost-instance-secret"
ENV = {
    "MAX_TOTAL_TOKENS": "64",
    "MAX_INPUT_TOKENS": "48",
    "STREAMHOST_INSTANCE_SECRET": SECRET,
}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES = 200 if SOAK else 20


@pytest.fixture(scope="module")
def tgi_server(tmp_path_factory):
    live = start_model_server(
        {"HF_MODEL_ID": "synthetic:0", **ENV}, model_dir=str(tmp_path_factory.mktemp("tgi"))
    )
    yield live
    live.stop()


@pytest.fixture(scope="module")
def lmi_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lmi")
    (folder / "serving.properties").write_text("engine=Python\noption.model_id=synthetic:0\n")
    live = start_model_server(ENV, model_dir=str(folder))
    yield live
    live.stop()


fuzz = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)


def operations(api: str) -> list:
    schema = schemathesis.openapi.from_dict(openapi_document(api))
    return [result.ok() for result in schema.get_all_operations()]


def cases(api: str) -> list:
    return [
        pytest.param(operation, mode, id=f"{operation.label} {mode.value}")
        for operation in operations(api)
        for mode in GenerationMode
        # Only a request with a body or path parameters can be made invalid.
        if mode is GenerationMode.POSITIVE or operation.method.upper() == "POST"
    ]


def fuzz_operation(server, operation, mode) -> None:
    """Every generated request gets a documented answer, and never a 5xx."""

    @fuzz
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case) -> None:
        case.call_and_validate(
            base_url=server.url, headers={SECRET_HEADER: SECRET}, checks=CHECKS, timeout=30
        )

    run()


@pytest.mark.parametrize(("operation", "mode"), cases("tgi"))
def test_the_tgi_personality_answers_every_input_as_documented(tgi_server, operation, mode):
    fuzz_operation(tgi_server, operation, mode)


@pytest.mark.parametrize(("operation", "mode"), cases("lmi"))
def test_the_lmi_personality_answers_every_input_as_documented(lmi_server, operation, mode):
    fuzz_operation(lmi_server, operation, mode)


def test_the_document_lists_exactly_the_routes_served(tgi_server, lmi_server):
    for server, only, absent in (
        (tgi_server, "/generate_stream", "/predictions/{model}"),
        (lmi_server, "/predictions/{model}", "/generate_stream"),
    ):
        document = httpx.get(server.url + "/openapi.json").json()
        assert document == openapi_document(server.server.config.app.state.server.config.api)
        paths = document["paths"]
        app = server.server.config.app
        # The HTTP routes; the bidirectional stream's WebSocket is SageMaker's contract
        # (docs/bidirectional.md), not an HTTP operation.
        served = {route.path for route in app.routes if not isinstance(route, WebSocketRoute)}
        assert set(paths) == served
        assert {route.path for route in app.routes} - served == {
            "/invocations-bidirectional-stream"
        }
        assert only in paths and absent not in paths


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/generate",
        "/generate_stream",
        "/invocations",
        "/tokenize",
        "/v1/chat/completions",
        "/v1/completions",
    ],
)
def test_without_the_instance_secret_nothing_reaches_the_model(tgi_server, path):
    body = {"inputs": "x", "messages": [{"role": "user", "content": "x"}], "prompt": "x"}
    served = request_count(tgi_server)
    for headers in ({}, {SECRET_HEADER: "wrong"}, {SECRET_HEADER: SECRET + "x"}):
        response = httpx.post(tgi_server.url + path, json=body, headers=headers)
        assert response.status_code == 403
        assert response.json() == {
            "error": "this instance accepts requests from its gateway only",
            "error_type": "forbidden",
        }
    assert request_count(tgi_server) == served


def request_count(server) -> int:
    metrics = httpx.get(server.url + "/metrics").text
    return int(
        next(
            line for line in metrics.splitlines() if line.startswith("tgi_request_count ")
        ).split()[1]
    )
