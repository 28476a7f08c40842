"""A real model server on loopback, shared by a test module."""

from __future__ import annotations

import socket
import threading
import time

import httpx
import pytest
import uvicorn

from streamhost.server.app import create_app
from streamhost.server.config import build_config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """uvicorn serving an app on a thread; ``url`` is its base URL."""

    def __init__(self, app) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self, ready_timeout: float = 120) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/ping", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("model server did not become ready")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def start_server(env: dict[str, str] | None = None, **kwargs) -> LiveServer:
    config = build_config(env=env or {}, **kwargs)
    return LiveServer(create_app(config)).start()


@pytest.fixture(scope="module")
def tgi_server(tiny_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    server = start_server(
        {"HF_MODEL_ID": "tiny", "MAX_TOTAL_TOKENS": "2048", "MAX_INPUT_LENGTH": "1900"},
        model_dir=str(folder),
    )
    yield server
    server.stop()
