"""Custom LMI handlers: a ``model.py`` with ``handle(inputs) -> Output`` in the model folder.

Trust boundary: the code runs with the server's rights, and only from the model folder the
operator deployed (``option.entryPoint`` or ``model.py``); requests can never name code.
``requirements.txt`` beside it is installed before loading unless
``STREAMHOST_NO_REQUIREMENTS=1`` (the operator's refusal).

The ``djl_python`` names a handler imports (``Input``, ``Output``) are provided here and
registered under that module name, so DJL Serving handlers run unchanged.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import subprocess
import sys
import types
from collections.abc import AsyncIterator, Iterable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from streamhost.server.config import ServerConfig

log = logging.getLogger("streamhost.server")


class Input:
    """DJL Serving's request object, as a handler sees it."""

    def __init__(
        self,
        properties: dict[str, str],
        content: bytes = b"",
        headers: dict[str, str] | None = None,
    ):
        self.properties = dict(properties)
        self.content = content
        for key, value in (headers or {}).items():
            self.properties.setdefault(key, value)

    def get_properties(self) -> dict[str, str]:
        """Configuration and request headers."""
        return self.properties

    def get_property(self, key: str) -> str | None:
        """One property."""
        return self.properties.get(key)

    def contains_key(self, key: str) -> bool:
        """True when the property exists."""
        return key in self.properties

    def is_empty(self) -> bool:
        """True for the initialisation call."""
        return not self.content

    def get_as_bytes(self, key: str | None = None) -> bytes:
        """The raw body."""
        return self.content

    def get_data(self, key: str | None = None) -> bytes:
        """The raw body."""
        return self.content

    def get_as_string(self, key: str | None = None) -> str:
        """The body as UTF-8 text."""
        return self.content.decode("utf-8")

    def get_as_json(self, key: str | None = None) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.content)

    def is_batch(self) -> bool:
        """Requests are never batched here."""
        return False

    def get_batch_size(self) -> int:
        """Always 1."""
        return 1


class Output:
    """DJL Serving's response object: body, headers, status, or a stream."""

    def __init__(self, code: int = 200, message: str = "OK") -> None:
        self.code = code
        self.message = message
        self.properties: dict[str, str] = {}
        self.content = b""
        self.stream: Iterable | None = None
        self.stream_formatter: Any = None

    def set_code(self, code: int) -> Output:
        """Set the HTTP status."""
        self.code = code
        return self

    def set_message(self, message: str) -> Output:
        """Set the status message."""
        self.message = message
        return self

    def add_property(self, key: str, value: str) -> Output:
        """Add a response header (``content-type`` included)."""
        self.properties[key] = value
        return self

    def add(self, value: Any, key: str | None = None, batch_index: int | None = None) -> Output:
        """Append bytes or text to the body (dicts and lists as JSON)."""
        if isinstance(value, (dict, list)):
            return self.add_as_json(value)
        self.content += value if isinstance(value, bytes) else str(value).encode()
        return self

    def add_as_json(
        self, value: Any, key: str | None = None, batch_index: int | None = None
    ) -> Output:
        """Set a JSON body."""
        self.content += json.dumps(value).encode()
        self.properties.setdefault("content-type", "application/json")
        return self

    def error(self, error: str, code: int = 424, message: str = "prediction failure") -> Output:
        """LMI's error output."""
        self.code = code
        self.message = message
        self.content = json.dumps({"code": code, "message": message, "error": error}).encode()
        self.properties["content-type"] = "application/json"
        return self

    def add_stream_content(self, stream: Iterable, output_formatter: Any = "default") -> Output:
        """Stream the generator's values; ``None`` as formatter sends them as they are."""
        self.stream = stream
        self.stream_formatter = output_formatter
        return self


def default_stream_formatter(token: Any) -> bytes:
    """LMI's default stream formatter: ``{"outputs": [...]}\\n`` per value."""
    tokens = token if isinstance(token, list) else [token]
    return (json.dumps({"outputs": tokens}) + "\n").encode()


def install_djl_python() -> None:
    """Make ``from djl_python import Input, Output`` work for handlers."""
    if "djl_python" in sys.modules:
        return
    module = types.ModuleType("djl_python")
    module.Input = Input  # type: ignore[attr-defined]
    module.Output = Output  # type: ignore[attr-defined]
    sys.modules["djl_python"] = module
    for name in ("inputs", "outputs"):
        sub = types.ModuleType(f"djl_python.{name}")
        sub.Input = Input  # type: ignore[attr-defined]
        sub.Output = Output  # type: ignore[attr-defined]
        sys.modules[f"djl_python.{name}"] = sub


class CustomHandler:
    """A loaded ``model.py`` and the way requests reach its ``handle``."""

    def __init__(self, module: Any, properties: dict[str, str]) -> None:
        self.module = module
        self.properties = properties

    @classmethod
    def load(cls, config: ServerConfig) -> CustomHandler:
        """Install requirements, import the handler and run its initialisation call."""
        assert config.entry_point is not None
        path = config.entry_point
        requirements = path.parent / "requirements.txt"
        if requirements.exists():
            if (
                os.environ.get("STREAMHOST_NO_REQUIREMENTS") == "1"
                or not config.install_requirements
            ):
                log.warning("not installing %s (refused by the operator)", requirements)
            else:
                log.info("installing %s", requirements)
                subprocess.run(
                    [sys.executable, "-m", "pip", "install", "-q", "-r", str(requirements)],
                    check=True,
                    timeout=1800,
                )
        install_djl_python()
        spec = importlib.util.spec_from_file_location("streamhost_user_model", path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(path.parent))
        spec.loader.exec_module(module)
        if not callable(getattr(module, "handle", None)):
            raise ImportError(f"{path} has no handle(inputs) function")
        properties = {**config.properties, "model_dir": str(config.model_dir)}
        module.handle(Input(properties))  # the initialisation call, as DJL Serving makes
        return cls(module, properties)

    async def invoke(self, request: Request, body: Any) -> Response:
        """Run ``handle`` off the event loop; stream a generator's values as chunks."""
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        inputs = Input(self.properties, raw, dict(request.headers))
        try:
            output = await asyncio.to_thread(self.module.handle, inputs)
        except Exception as exc:  # the handler's fault: LMI's 424, never a crash
            log.exception("custom handler failed")
            return Response(
                json.dumps({"code": 424, "message": "invoke handler failure", "error": str(exc)}),
                status_code=424,
                media_type="application/json",
            )
        if output is None:
            return Response(status_code=200)
        headers = {k: v for k, v in output.properties.items() if k.lower() != "content-type"}
        media_type = output.properties.get("content-type") or output.properties.get("Content-Type")
        if output.stream is None:
            return Response(
                output.content, status_code=output.code, media_type=media_type, headers=headers
            )
        formatter = output.stream_formatter
        if formatter == "default":
            formatter = default_stream_formatter
        return StreamingResponse(
            _drain(output.stream, formatter),
            status_code=output.code,
            media_type=media_type or "application/jsonlines",
            headers={**headers, "X-Accel-Buffering": "no"},
        )


async def _drain(stream: Iterable, formatter: Any) -> AsyncIterator[bytes]:
    # The generator is the handler's code and may block: step it on a worker thread.
    iterator = iter(stream)
    sentinel = object()
    while True:
        try:
            value = await asyncio.to_thread(next, iterator, sentinel)
        except Exception as exc:  # LMI's in-band form for a handler stream error
            yield str(exc).encode()
            return
        if value is sentinel:
            return
        chunk = formatter(value) if formatter is not None else value
        yield chunk if isinstance(chunk, bytes) else str(chunk).encode()
