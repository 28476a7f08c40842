"""`streamhost gateway --tls-cert/--tls-key`: boto3 over HTTPS with a real certificate."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import botocore.exceptions
import pytest

from tests.harness import (
    GatewayProcess,
    client,
    create_synthetic_endpoint,
    delete_endpoint,
    payload_bytes,
    tgi_body,
    tls_files,
)


@pytest.fixture
def tls_gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    """A gateway process serving HTTPS with a certificate for 127.0.0.1 from a test CA."""
    cert, key, ca = tls_files(tmp_path)
    gateway = GatewayProcess(
        tmp_path / "state",
        *["--tls-cert", str(cert), "--tls-key", str(key), "--http2-port", "0"],
        ca_file=str(ca),
    )
    try:
        yield gateway.start()
    finally:
        gateway.stop()
    assert "Traceback" not in gateway.log_text(), gateway.log_text()


def test_boto3_deploys_and_streams_over_https(tls_gateway):
    assert tls_gateway.url.startswith("https://")
    sm = tls_gateway.sm()
    assert sm.list_endpoints()["Endpoints"] == []
    create_synthetic_endpoint(sm, "secure", count=1)
    try:
        answer = tls_gateway.smr().invoke_endpoint_with_response_stream(
            EndpointName="secure", Body=tgi_body(tokens=3)
        )
        assert b"generated_text" in payload_bytes(answer)
    finally:
        delete_endpoint(sm, "secure")


def test_a_client_that_does_not_trust_the_certificate_is_refused(tls_gateway):
    with pytest.raises(botocore.exceptions.SSLError):
        client("sagemaker", tls_gateway.url, verify=True).list_endpoints()


def test_plain_http_to_the_tls_port_gets_no_answer(tls_gateway):
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(tls_gateway.url.replace("https://", "http://") + "/ping", timeout=5)
