"""Typed errors for everything that can go wrong while reading a model's response stream.

In-band errors (a JSON error object inside a 200 stream, an event-stream exception message)
become these exceptions in one place, :func:`error_from_payload`, so callers catch one hierarchy
whichever protocol the server speaks.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = [
    "GenerationError",
    "InternalStreamFailure",
    "ModelStreamError",
    "OverloadedError",
    "ProtocolError",
    "StreamError",
    "ValidationError",
    "error_from_payload",
    "error_from_response",
]


class StreamError(Exception):
    """Base class: the stream ended in an error instead of a complete answer."""

    def __init__(
        self, message: str, *, error_type: str | None = None, status_code: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error_type = error_type
        self.status_code = status_code


class ValidationError(StreamError):
    """The server rejected the request's inputs or parameters."""


class OverloadedError(StreamError):
    """The server is at capacity; retrying later may succeed."""


class GenerationError(StreamError):
    """Generation failed (or stopped short) after it started."""


class ModelStreamError(StreamError):
    """SageMaker event-stream ``ModelStreamError``: the model's stream broke or timed out.

    ``error_code`` is ``StreamBroken`` or ``ModelInvocationTimeExceeded`` when known; botocore
    drops it when it raises ``EventStreamError``, so it is ``None`` for boto3 bodies.
    """

    def __init__(self, message: str, *, error_code: str | None = None) -> None:
        super().__init__(message, error_type="ModelStreamError")
        self.error_code = error_code


class InternalStreamFailure(StreamError):
    """SageMaker event-stream ``InternalStreamFailure``: the hosting service itself failed."""

    def __init__(self, message: str) -> None:
        super().__init__(message, error_type="InternalStreamFailure")


class ProtocolError(StreamError):
    """The bytes on the wire are not the protocol they claim to be (bad frame, bad JSON)."""


_BY_ERROR_TYPE: dict[str, type[StreamError]] = {
    "validation": ValidationError,
    "invalid_request_error": ValidationError,
    "template_error": ValidationError,
    "missing_template_variable": ValidationError,
    "tool_error": ValidationError,
    "overloaded": OverloadedError,
    "rate_limit_error": OverloadedError,
    "generation": GenerationError,
    # SageMaker runtime's pre-stream errors (x-amzn-ErrorType).
    "ValidationError": ValidationError,
    "ModelError": GenerationError,
    "ServiceUnavailable": OverloadedError,
    "ThrottlingException": OverloadedError,
}


def _class_for_status(
    status: int | None, default: type[StreamError] = GenerationError
) -> type[StreamError]:
    if status in (400, 413, 415, 422):
        return ValidationError
    if status in (429, 503):
        return OverloadedError
    if status in (424, 500):
        return GenerationError
    return default


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    # ASCII digits only, and few: int() refuses other Unicode digits ("²") and more than
    # 4300 of them, and no status code is longer.
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 9:
        return int(value)
    return None


def error_from_payload(payload: Any) -> StreamError | None:
    """Return the exception an in-band error object stands for, or ``None`` if it is no error.

    Knows TGI ``{"error", "error_type"}``, OpenAI ``{"error": {...}}``, LMI ``{"code", "error"}``
    and DJL ``{"code", "message"}`` objects, and LMI token lines whose finish_reason is "error".
    """
    if not isinstance(payload, Mapping):
        return None
    error = payload.get("error")
    if isinstance(error, Mapping):
        # OpenAI and TGI's chat routes nest the error; TGI puts the HTTP status inside it.
        message = str(error.get("message") or error)
        error_type = error.get("type") or error.get("error_type")
        status = _as_int(error.get("http_status_code")) or _as_int(error.get("code"))
        return _build(message, error_type, status)
    if isinstance(error, str) and error:
        return _build(error, payload.get("error_type"), _as_int(payload.get("code")))
    code = _as_int(payload.get("code"))
    if code is not None and code >= 400 and "message" in payload and not _has_output(payload):
        # DJL's Netty and batch-failure bodies: {"code": 500, "type": ..., "message": ...}.
        return _build(str(payload["message"]), payload.get("type"), code)
    details = payload.get("details")
    if isinstance(details, Mapping) and details.get("finish_reason") == "error":
        message = details.get("error") or details.get("message") or "generation failed"
        return GenerationError(str(message), error_type="error")
    return None


def _has_output(payload: Mapping[str, Any]) -> bool:
    return any(key in payload for key in ("token", "outputs", "generated_text", "choices"))


def _build(message: str, error_type: Any, status: int | None) -> StreamError:
    error_type = error_type if isinstance(error_type, str) else None
    cls = _BY_ERROR_TYPE.get(error_type or "") or _class_for_status(status)
    return cls(message, error_type=error_type, status_code=status)


def error_from_response(status: int, body: bytes, aws_error_type: str | None = None) -> StreamError:
    """The exception for an HTTP error response that arrived instead of a stream.

    ``aws_error_type`` is the ``x-amzn-ErrorType`` header of SageMaker-style errors.
    """
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    error = error_from_payload(payload)
    if error is not None:
        error.status_code = error.status_code or status
        return error
    message = body.decode("utf-8", "replace").strip() or f"HTTP {status}"
    if isinstance(payload, Mapping):
        message = str(payload.get("message") or payload.get("Message") or message)
    error_type = aws_error_type.split(":", 1)[0] if aws_error_type else None
    cls = _BY_ERROR_TYPE.get(error_type or "") or _class_for_status(status, StreamError)
    return cls(message, error_type=error_type, status_code=status)
