"""Error paths over HTTP, disconnects, loading state and graceful shutdown."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from tests.harness import free_port, start_model_server


@pytest.fixture(scope="module")
def small_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synthetic")
    env = {"HF_MODEL_ID": "synthetic:20", "MAX_CONCURRENT_REQUESTS": "2", "API_KEY": "s3cret"}
    server = start_model_server(env, model_dir=str(folder))
    yield server
    server.stop()


AUTH = {"Authorization": "Bearer s3cret"}


def test_api_key_is_required_as_tgi_does(small_server):
    assert httpx.post(small_server.url + "/generate", json={"inputs": "a"}).status_code == 401
    ok = httpx.post(
        small_server.url + "/generate",
        json={"inputs": "a", "parameters": {"max_new_tokens": 2}},
        headers=AUTH,
    )
    assert ok.status_code == 200 and ok.json()["generated_text"] == "0 1 "
    assert httpx.get(small_server.url + "/ping").status_code == 200  # health is never authenticated


def test_overload_is_429_and_recovers(small_server):
    body = {"inputs": "a", "parameters": {"max_new_tokens": 50}}
    with httpx.Client(timeout=30) as client:
        streams = [
            client.stream("POST", small_server.url + "/generate_stream", json=body, headers=AUTH)
            for _ in range(2)
        ]
        responses = [s.__enter__() for s in streams]
        try:
            refused = client.post(small_server.url + "/generate", json=body, headers=AUTH)
            assert refused.status_code == 429
            assert refused.json() == {"error": "Model is overloaded", "error_type": "overloaded"}
        finally:
            for s in streams:
                s.__exit__(None, None, None)
        del responses
        for _ in range(100):
            again = client.post(
                small_server.url + "/generate",
                json={"inputs": "a", "parameters": {"max_new_tokens": 1}},
                headers=AUTH,
            )
            if again.status_code == 200:
                break
            time.sleep(0.05)
        assert again.status_code == 200


def test_disconnecting_client_cancels_its_generation(small_server):
    engine = small_server.server.config.app.state.server.engine
    cancelled = engine.metrics.finish_reasons["cancelled"]
    body = {"inputs": "a", "parameters": {"max_new_tokens": 4000}}  # 200 s of tokens
    with httpx.stream(
        "POST", small_server.url + "/generate_stream", json=body, headers=AUTH, timeout=30
    ) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data:"):
                break
    for _ in range(200):
        if engine.active_requests == 0 and engine.metrics.batch_size == 0:
            break
        time.sleep(0.02)
    assert engine.active_requests == 0 and engine.metrics.batch_size == 0
    assert engine.metrics.finish_reasons["cancelled"] == cancelled + 1


@pytest.mark.parametrize(
    "path", ["/generate_stream", "/invocations", "/v1/chat/completions", "/tokenize"]
)
def test_a_client_gone_before_its_body_ends_is_no_error(small_server, path):
    errors: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = errors.append  # type: ignore[method-assign]
    logging.getLogger("uvicorn.error").addHandler(handler)
    try:
        with socket.create_connection(("127.0.0.1", small_server.port)) as sock:
            sock.sendall(
                f"POST {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer s3cret\r\n"
                "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                '{"inputs": '.encode()
            )
            time.sleep(0.2)  # the handler is waiting for the rest of the body
        time.sleep(1.0)
    finally:
        logging.getLogger("uvicorn.error").removeHandler(handler)
    assert [record.getMessage() for record in errors] == []
    r = httpx.post(
        small_server.url + "/generate",
        json={"inputs": "a", "parameters": {"max_new_tokens": 1}},
        headers=AUTH,
    )
    assert r.status_code == 200


def test_wrong_content_shapes_are_json_errors(small_server):
    r = httpx.post(small_server.url + "/generate", content=b"[1, 2]", headers=AUTH)
    assert r.status_code == 422 and r.json()["error_type"] == "validation"
    r = httpx.post(small_server.url + "/invocations", content=b'"just a string"', headers=AUTH)
    assert r.status_code == 422
    r = httpx.post(
        small_server.url + "/v1/chat/completions", json={"messages": "nope"}, headers=AUTH
    )
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.slow
def test_lmi_stream_error_is_in_band_after_200(tiny_dir, tmp_path):
    (tmp_path / "serving.properties").write_text(
        "option.model_id=tiny\noption.output_formatter=jsonlines\n"
    )
    server = start_model_server({}, model_dir=str(tmp_path))
    try:
        engine = server.server.config.app.state.server.engine
        lines = []
        with httpx.stream(
            "POST",
            server.url + "/invocations",
            json={"inputs": "x", "parameters": {"max_new_tokens": 3000, "ignore_eos_token": True}},
            timeout=60,
        ) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                lines.append(json.loads(line))
                if len(lines) == 2:
                    engine._host._scheduler.process.kill()
        assert lines[-1]["code"] == 424 and "engine process exited" in lines[-1]["error"]
    finally:
        server.stop()


def _serve(tmp_path, env_extra: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "HF_MODEL_ID": "tiny", **env_extra}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamhost.cli",
            "serve-model",
            "--port",
            str(port),
            "--model-dir",
            str(tmp_path),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, f"http://127.0.0.1:{port}"


@pytest.mark.slow
def test_ping_answers_503_with_a_reason_while_loading_then_200(tiny_dir, tmp_path):
    proc, url = _serve(tmp_path, {})
    try:
        first = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                first = httpx.get(url + "/ping", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.02)
        assert first is not None and first.status_code == 503
        assert first.json()["error"] == "model is loading"
        while httpx.get(url + "/ping").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_sigterm_ends_in_flight_streams_within_the_grace_period(tiny_dir, tmp_path):
    proc, url = _serve(tmp_path, {"GRACEFUL_TERMINATION_TIMEOUT": "2"})
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/ping", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.1)
        body = {"inputs": "x", "parameters": {"max_new_tokens": 3000, "ignore_eos": True}}
        seen = 0
        signalled = 0.0
        try:
            with httpx.stream("POST", url + "/generate_stream", json=body, timeout=60) as r:
                for line in r.iter_lines():
                    if line.startswith("data:"):
                        seen += 1
                        if seen == 3:
                            proc.send_signal(signal.SIGTERM)
                            signalled = time.monotonic()
        except httpx.RemoteProtocolError:
            pass  # the server closed the stream at the end of its grace period
        # The stream ended long before its 3000 tokens, and the process exited soon after.
        assert seen < 3000
        assert proc.wait(timeout=30) is not None
        assert time.monotonic() - signalled < 30
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
