"""`streamhost gateway --tls-cert/--tls-key`: boto3 over HTTPS with a real certificate."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import botocore.exceptions
import pytest
import trustme
from botocore.config import Config

from .conftest import (
    ACCESS_KEY,
    REGION,
    SECRET_KEY,
    create_synthetic_endpoint,
    delete_endpoint,
    payload_bytes,
    tgi_body,
)
from .test_gateway_cli import free_port


def https_client(service: str, url: str, verify: str | bool) -> object:
    return boto3.session.Session().client(
        service,
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        verify=verify,
        config=Config(retries={"total_max_attempts": 1}, read_timeout=120),
    )


@pytest.fixture
def tls_gateway(tmp_path: Path):
    """A gateway process serving HTTPS with a certificate for 127.0.0.1 from a test CA;
    yields (its https URL, the CA's PEM file)."""
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1", "localhost")
    cert, key, ca = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    certificate.cert_chain_pems[0].write_to_path(str(cert))
    certificate.private_key_pem.write_to_path(str(key))
    authority.cert_pem.write_to_path(str(ca))
    credentials = tmp_path / "credentials"
    credentials.write_text(
        f"[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
    )
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    gateway = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamhost.cli",
            "--log-level",
            "warning",
            "gateway",
            "--port",
            str(port),
            "--state",
            str(tmp_path / "state" / "gateway.db"),
            "--credentials",
            str(credentials),
            "--tls-cert",
            str(cert),
            "--tls-key",
            str(key),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"https://127.0.0.1:{port}"
    trusted = ssl.create_default_context(cafile=str(ca))
    try:
        deadline = time.monotonic() + 30
        while True:
            assert gateway.poll() is None, gateway.stdout.read()
            try:
                urllib.request.urlopen(url + "/ping", timeout=1, context=trusted)
                break
            except OSError:
                assert time.monotonic() < deadline, "gateway did not start"
                time.sleep(0.1)
        yield url, str(ca)
    finally:
        gateway.send_signal(signal.SIGTERM)
        output, _ = gateway.communicate(timeout=60)
    assert "Traceback" not in output, output


def test_boto3_deploys_and_streams_over_https(tls_gateway):
    url, ca = tls_gateway
    sm = https_client("sagemaker", url, verify=ca)
    assert sm.list_endpoints()["Endpoints"] == []
    create_synthetic_endpoint(sm, "secure", count=1)
    try:
        response = https_client("sagemaker-runtime", url, verify=ca)
        answer = response.invoke_endpoint_with_response_stream(
            EndpointName="secure", Body=tgi_body(tokens=3)
        )
        assert b"generated_text" in payload_bytes(answer)
    finally:
        delete_endpoint(sm, "secure")


def test_a_client_that_does_not_trust_the_certificate_is_refused(tls_gateway):
    url, _ = tls_gateway
    with pytest.raises(botocore.exceptions.SSLError):
        https_client("sagemaker", url, verify=True).list_endpoints()


def test_plain_http_to_the_tls_port_gets_no_answer(tls_gateway):
    url, _ = tls_gateway
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(url.replace("https://", "http://") + "/ping", timeout=5)
