"""boto3 client helpers and stream_text against a real HTTP server on loopback.

The server speaks just enough of the SageMaker runtime (event-stream framing over chunked
HTTP/1.1) and of TGI for real boto3, httpx, requests and aiohttp clients to stream from it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import ClassVar

import aiohttp
import botocore.config
import httpx
import pytest
import requests

from streamhost.client import (
    LineIterator,
    ModelStreamError,
    ValidationError,
    astream_text,
    load_credentials,
    runtime_client,
    sagemaker_client,
    stream_text,
)

from ..loopback import LoopbackHTTPServer
from .streamwire import exception_message, frames, lmi_outputs_lines, payload_part, tgi_sse

TOKENS = ["Hi", " there", " 🙂"]
TEXT = "".join(TOKENS)
_AWS_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_SAGEMAKER",
    "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME",
)

# Endpoint name -> (payload content type, event-stream body as a list of HTTP chunks).
ENDPOINTS = {
    # One PayloadPart per SSE event, as a gateway relays a TGI container's chunks.
    "tgi": (
        "text/event-stream",
        [payload_part(event + b"\n\n") for event in tgi_sse(TOKENS).split(b"\n\n") if event],
    ),
    "lmi": ("application/jsonlines", [frames(lmi_outputs_lines(TOKENS), [4, 30])]),
    "broken": (
        "application/jsonlines",
        [
            payload_part(b'{"outputs": ["Hi"]}\n'),
            exception_message(
                "ModelStreamError", {"Message": "reset", "ErrorCode": "StreamBroken"}
            ),
        ],
    ),
}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    authorizations: ClassVar[list[str]] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).authorizations.append(self.headers.get("Authorization", ""))
        parts = self.path.strip("/").split("/")
        if parts[0] == "generate_stream":
            self._chunked(200, {"Content-Type": "text/event-stream"}, [tgi_sse(TOKENS)])
        elif parts[0] == "invalid":
            body = {"error": "Input validation error: bad", "error_type": "validation"}
            self._chunked(422, {"Content-Type": "application/json"}, [json.dumps(body).encode()])
        elif parts[0] == "endpoints" and parts[1] in ENDPOINTS:
            content_type, chunks = ENDPOINTS[parts[1]]
            headers = {
                "Content-Type": "application/vnd.amazon.eventstream",
                "X-Amzn-SageMaker-Content-Type": content_type,
            }
            self._chunked(200, headers, chunks)
        else:
            self._chunked(404, {"Content-Type": "text/plain"}, [b"no such route"])

    def _chunked(self, status: int, headers: dict[str, str], chunks: list[bytes]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for chunk in chunks:
            if chunk:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = LoopbackHTTPServer(_Handler)
    yield httpd.start().url
    httpd.stop()


@pytest.fixture
def clean_aws_env(monkeypatch, tmp_path):
    for name in _AWS_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def write_credentials(home, key_id: str) -> None:
    path = home / ".config" / "streamhost" / "credentials"
    path.parent.mkdir(parents=True)
    path.write_text(f"[default]\naws_access_key_id = {key_id}\naws_secret_access_key = s3cret\n")


def invoke(client, endpoint: str) -> dict:
    return client.invoke_endpoint_with_response_stream(
        EndpointName=endpoint, Body=b'{"inputs": "hi"}', ContentType="application/json"
    )


NO_RETRIES = botocore.config.Config(retries={"max_attempts": 1, "mode": "standard"})


def test_runtime_client_streams_tgi_text_through_boto3(server, clean_aws_env):
    client = runtime_client(
        server, credentials={"aws_access_key_id": "AKIDX", "aws_secret_access_key": "s"}
    )
    stream = stream_text(invoke(client, "tgi"))
    assert "".join(stream) == TEXT
    assert stream.result.finish_reason == "eos_token"


def test_line_iterator_reads_a_boto3_body_from_a_real_server(server, clean_aws_env):
    client = runtime_client(
        server, credentials={"aws_access_key_id": "A", "aws_secret_access_key": "s"}
    )
    lines = LineIterator(invoke(client, "lmi")["Body"])
    assert "".join(json.loads(line)["outputs"][0] for line in lines) == TEXT


def test_boto3_model_stream_error_from_a_real_server_raises_model_stream_error(
    server, clean_aws_env
):
    client = runtime_client(
        server,
        credentials={"aws_access_key_id": "A", "aws_secret_access_key": "s"},
        config=NO_RETRIES,
    )
    stream = iter(stream_text(invoke(client, "broken")))
    assert next(stream) == "Hi"
    with pytest.raises(ModelStreamError, match="reset"):
        next(stream)


def test_runtime_client_signs_with_the_streamhost_credentials_file(server, clean_aws_env):
    write_credentials(clean_aws_env, "AKIDFROMFILE")
    "".join(stream_text(invoke(runtime_client(server), "lmi")))
    assert "Credential=AKIDFROMFILE/" in _Handler.authorizations[-1]


def test_runtime_client_falls_back_to_the_boto3_chain_without_the_file(
    server, clean_aws_env, monkeypatch
):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFROMENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    "".join(stream_text(invoke(runtime_client(server), "lmi")))
    assert "Credential=AKIDFROMENV/" in _Handler.authorizations[-1]


def test_sagemaker_client_targets_the_gateway_in_the_given_region(clean_aws_env):
    client = sagemaker_client(
        "http://127.0.0.1:9",
        region="eu-west-1",
        credentials={"aws_access_key_id": "A", "aws_secret_access_key": "s"},
    )
    assert client.meta.service_model.service_name == "sagemaker"
    assert (client.meta.endpoint_url, client.meta.region_name) == (
        "http://127.0.0.1:9",
        "eu-west-1",
    )


def test_client_rejects_unknown_credential_keys(clean_aws_env):
    with pytest.raises(ValueError, match="unknown credential keys"):
        runtime_client("http://127.0.0.1:9", credentials={"password": "x"})


def test_load_credentials_reads_the_default_profile(tmp_path):
    path = tmp_path / "credentials"
    path.write_text(
        "[other]\naws_access_key_id = B\naws_secret_access_key = b\n"
        "[default]\naws_access_key_id = A\naws_secret_access_key = a\naws_session_token = t\n"
    )
    assert load_credentials(path) == {
        "aws_access_key_id": "A",
        "aws_secret_access_key": "a",
        "aws_session_token": "t",
    }


def test_load_credentials_without_a_file_is_none(tmp_path):
    assert load_credentials(tmp_path / "missing") is None


def test_load_credentials_with_an_incomplete_profile_is_none(tmp_path):
    path = tmp_path / "credentials"
    path.write_text("[default]\naws_access_key_id = A\n")
    assert load_credentials(path) is None


def test_httpx_streams_eventstream_from_the_gateway_route(server):
    with (
        httpx.Client() as client,
        client.stream(
            "POST", f"{server}/endpoints/lmi/invocations-response-stream", content=b"{}"
        ) as response,
    ):
        assert "".join(stream_text(response)) == TEXT


def test_requests_streams_tgi_sse(server):
    with requests.post(f"{server}/generate_stream", data=b"{}", stream=True) as response:
        assert "".join(stream_text(response)) == TEXT


def test_requests_error_status_raises_the_typed_error(server):
    with (
        requests.post(f"{server}/invalid", data=b"{}", stream=True) as response,
        pytest.raises(ValidationError, match="bad"),
    ):
        "".join(stream_text(response))


async def test_httpx_async_streams_tgi_sse(server):
    async with (
        httpx.AsyncClient() as client,
        client.stream("POST", f"{server}/generate_stream", content=b"{}") as response,
    ):
        assert "".join([text async for text in astream_text(response)]) == TEXT


async def test_aiohttp_streams_eventstream_from_the_gateway_route(server):
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{server}/endpoints/tgi/invocations-response-stream", data=b"{}") as response,
    ):
        assert "".join([text async for text in astream_text(response)]) == TEXT
