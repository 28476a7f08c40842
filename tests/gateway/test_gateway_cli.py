"""`streamhost gateway`: options, one-line errors, and a gateway that never imports torch."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from streamhost import cli
from tests.harness import (
    GatewayProcess,
    client,
    create_synthetic_endpoint,
    delete_endpoint,
    payload_bytes,
    tgi_body,
)


@pytest.fixture
def no_aws_env(monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.config/streamhost/credentials


def test_gateway_help_explains_the_options_with_an_example(capsys):
    with pytest.raises(SystemExit) as raised:
        cli.main(["gateway", "--help"])
    assert raised.value.code == 0
    out = capsys.readouterr().out
    for option in (
        "--state",
        "--credentials",
        "--tls-cert",
        "--no-auth",
        "--stream-timeout",
        "--request-timeout",
    ):
        assert option in out
    assert "Example:" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--host", "0.0.0.0"], "refusing to serve 0.0.0.0 without credentials"),
        (["--host", "0.0.0.0", "--no-auth"], "--no-auth is only allowed on a loopback address"),
        (["--tls-cert", "/nonexistent.pem"], "--tls-cert and --tls-key go together"),
        (["--credentials", "/nonexistent/credentials"], "Cannot read credentials file"),
        (["--account", "42"], "--account must be 12 digits"),
        (["--request-timeout", "0"], "--request-timeout must be positive, got 0"),
    ],
)
def test_bad_options_are_one_line_errors(no_aws_env, capsys, args, message):
    assert cli.main(["gateway", *args]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1 and err.startswith("streamhost gateway: ")


def test_a_taken_port_is_a_one_line_error(no_aws_env, capsys, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = cli.main(["gateway", "--port", str(port), "--state", str(tmp_path / "g.db")])
    assert code == 1
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and err.count("\n") == 1


GATEWAY_WITHOUT_TORCH = """
import sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError
from streamhost.cli import main
code = main(sys.argv[1:])
assert "torch" not in [m.split(".")[0] for m in sys.modules if sys.modules[m] is not None]
sys.exit(code)
"""


@pytest.mark.slow
def test_the_gateway_runs_deploys_and_relays_without_torch(tmp_path):
    gateway = GatewayProcess(tmp_path / "state", launcher=("-c", GATEWAY_WITHOUT_TORCH)).start(30)
    url = gateway.url
    try:
        sm = client("sagemaker", url)
        create_synthetic_endpoint(sm, "torchless", count=1)
        instances = [
            p for p in psutil.Process(gateway.pid).children() if "serve-model" in p.cmdline()
        ]
        assert len(instances) == 1
        resp = client("sagemaker-runtime", url).invoke_endpoint_with_response_stream(
            EndpointName="torchless", Body=tgi_body()
        )
        assert b"generated_text" in payload_bytes(resp)
        delete_endpoint(sm, "torchless")
        create_synthetic_endpoint(sm, "left-running", count=1)
    finally:
        left = gateway.stop(60)  # SIGTERM, as Ctrl-C or systemd stops it: everything goes
    output = gateway.log_text()
    # uvicorn shuts down gracefully, then re-raises the signal it caught.
    assert gateway.popen.returncode in (0, -signal.SIGTERM), output
    assert not left, [p.pid for p in left]
    assert "Traceback" not in output, output
    leftovers = [
        p
        for p in psutil.process_iter(["cmdline"])
        if any(str(tmp_path) in part for part in (p.info["cmdline"] or []))
    ]
    assert not leftovers, [p.pid for p in leftovers]
    assert Path(tmp_path / "state" / "logs" / "left-running").is_dir()


def test_importing_the_gateway_loads_neither_torch_nor_the_model_server():
    code = (
        "import sys, streamhost.gateway.app, streamhost.gateway.provisioner\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')"
        " or m.startswith(('streamhost.server', 'streamhost.engine'))]\n"
        "print(bad)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
