"""Every failure a user can meet, as one readable sentence (never a traceback).

The chat UI shows it with ``st.error``; the terminal commands print it on one line.
"""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from streamhost.client import (
    InternalStreamFailure,
    ModelStreamError,
    OverloadedError,
    ProtocolError,
    StreamError,
    ValidationError,
)

__all__ = ["AUTH_ERROR_CODES", "describe_error", "error_code"]

AUTH_ERROR_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "IncompleteSignatureException",
        "MissingAuthenticationTokenException",
        "MissingAuthenticationToken",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "AccessDeniedException",
        "ExpiredTokenException",
        "ClockSkewException",
        "PayloadHashMismatchException",
    }
)

_CREDENTIALS_HINT = (
    "streamhost reads ~/.config/streamhost/credentials (written by `streamhost up`), "
    "then AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
)


def error_code(error: BaseException) -> str | None:
    """The AWS error code of a botocore ``ClientError``, else ``None``."""
    if isinstance(error, ClientError):
        return error.response.get("Error", {}).get("Code")
    return None


def describe_error(error: BaseException, gateway_url: str) -> str:
    """One sentence saying what went wrong and, where there is one, what to do about it."""
    if isinstance(error, (EndpointConnectionError, ConnectTimeoutError)):
        return (
            f"Cannot reach the streamhost gateway at {gateway_url}: start it with "
            "`streamhost up` (or `streamhost gateway`), or point STREAMHOST_GATEWAY_URL / "
            "--gateway at the right address."
        )
    if isinstance(error, ConnectionClosedError):
        return f"The gateway at {gateway_url} closed the connection before answering."
    if isinstance(error, ReadTimeoutError):
        return f"The gateway at {gateway_url} stopped answering (read timed out)."
    if isinstance(error, (NoCredentialsError, PartialCredentialsError)):
        return f"No credentials for the gateway: {_CREDENTIALS_HINT}."
    if isinstance(error, ParamValidationError):
        return f"Invalid request: {error}"
    if isinstance(error, ClientError):
        return _client_error(error)
    if isinstance(error, StreamError):
        return _stream_error(error)
    return f"{type(error).__name__}: {error}"


def _client_error(error: ClientError) -> str:
    details: dict[str, Any] = error.response.get("Error", {})
    code = details.get("Code") or "Error"
    message = (details.get("Message") or "").strip()
    if code in AUTH_ERROR_CODES:
        return f"The gateway rejected the credentials ({code}: {message}); {_CREDENTIALS_HINT}."
    if code == "ModelError":
        original = error.response.get("OriginalMessage")
        return f"The model could not answer: {_model_message(original) or message}"
    if code == "ServiceUnavailable":
        return f"The endpoint cannot take requests right now: {message}"
    if code in ("ThrottlingException", "ModelNotReadyException"):
        return f"The endpoint is busy, try again shortly: {message}"
    if code in ("ValidationError", "ValidationException") and (
        message.endswith("not found.") or message.startswith("Could not find endpoint")
    ):
        return f"{message} See `streamhost endpoints`, or deploy it with `streamhost deploy`."
    return f"{code}: {message}" if message else code


def _model_message(original: Any) -> str | None:
    """The container's own error text out of a ``ModelError``'s ``OriginalMessage``."""
    if not original:
        return None
    try:
        payload = json.loads(original)
    except (TypeError, ValueError):
        return str(original).strip()
    if isinstance(payload, dict):
        inner = payload.get("error")
        if isinstance(inner, dict):
            inner = inner.get("message")
        found = inner or payload.get("message") or payload.get("Message")
        if found:
            return str(found)
    return str(original).strip()


def _stream_error(error: StreamError) -> str:
    if isinstance(error, ModelStreamError):
        code = f" ({error.error_code})" if error.error_code else ""
        return f"The model's stream broke off{code}: {error.message or 'no details'}"
    if isinstance(error, InternalStreamFailure):
        return f"The gateway failed while streaming: {error.message or 'no details'}"
    if isinstance(error, ValidationError):
        return f"The model rejected the request: {error.message}"
    if isinstance(error, OverloadedError):
        return f"The model is overloaded, try again shortly: {error.message}"
    if isinstance(error, ProtocolError):
        return f"The answer was not in a format streamhost understands: {error.message}"
    return f"Generation failed: {error.message}"
