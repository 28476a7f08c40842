"""Every failure a user can meet, as one short line (never a traceback): the cause once,
then, where there is one, the next step (``see: streamhost logs NAME``).

The chat UI shows it with ``st.error``; the terminal commands print it on one line. The
gateway's own texts are long on purpose (an endpoint's FailureReason carries the last lines
of its instance's log, joined by `` | ``): `short_reason` keeps the cause of one, and the
whole text stays in ``streamhost endpoints describe`` and ``streamhost logs``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
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

__all__ = [
    "AUTH_ERROR_CODES",
    "LOG_LINES_MARKER",
    "REASON_LIMIT",
    "describe_error",
    "error_code",
    "log_cause",
    "logs_hint",
    "not_in_service",
    "one_line",
    "short_reason",
    "split_reason",
]

REASON_LIMIT = 200
"""Characters of a cause a one-line failure keeps."""
LOG_LINES_MARKER = "Last log lines:"
"""Where a gateway FailureReason's log tail starts; its lines are joined by `` | ``."""
_LOG_LINE_SEPARATOR = " | "
# Which instance of which variant failed is for `describe`; the short line says "an instance".
_INSTANCE = re.compile(r"^Instance \S+ of variant \S+ ")
# A sentence ends at . ! or ? followed by a space and a capital, a quote or a bracket:
# "folder /a/b.c does not exist. Last log lines" splits, "Qwen2.5-0.5B" and "e.g. x" do not.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z`\"'(\[])")
# Log lines that state a failure, the most telling last: our logging format's ERROR and
# CRITICAL records, a traceback's last line, a command's one-line failure, uvicorn's errors.
_LOGGED_ERROR = re.compile(r"^\S+ \S+ (?:ERROR|CRITICAL) [\w.]+: (?P<cause>.+)$")
_ERROR_LINE = re.compile(
    r"^(?:[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)(?::.*)?"
    r"|streamhost [\w-]+: .+|ERROR: .+|(?:Fatal|Killed|Segmentation fault).*)$"
)

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


def logs_hint(endpoint: str) -> str:
    """The next step after a failure of ``endpoint``'s model: its instances' logs."""
    return f"see: streamhost logs {endpoint}"


def not_in_service(name: str, status: str, failure_reason: str | None) -> str:
    """Why endpoint ``name`` takes no requests, on one line: its status, the cause of its
    failure and where its logs are, if it has failed."""
    if not failure_reason:
        return f"endpoint {name} is {status}, not InService"
    return f"endpoint {name} is {status}: {short_reason(failure_reason)}; {logs_hint(name)}"


def split_reason(reason: str) -> tuple[str, list[str]]:
    """A gateway FailureReason as its message and its log lines (none if it has no tail)."""
    message, marker, tail = reason.partition(LOG_LINES_MARKER)
    if not marker:
        return reason.strip(), []
    lines = [line.strip() for line in tail.split(_LOG_LINE_SEPARATOR)]
    return message.strip(), [line for line in lines if line]


def log_cause(lines: Iterable[str]) -> str | None:
    """The last line of a log that states a failure (an ERROR record's message, a
    traceback's last line, a command's one-line failure), if one does."""
    found = None
    for line in lines:
        line = line.strip()
        logged = _LOGGED_ERROR.match(line)
        if logged:
            found = logged.group("cause")
        elif _ERROR_LINE.match(line):
            found = line
    return found


def one_line(text: str, limit: int = REASON_LIMIT) -> str:
    """``text`` on one line, cut to ``limit`` characters (``…`` marks a cut)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def short_reason(reason: str, limit: int = REASON_LIMIT) -> str:
    """The cause in a failure text, on one line: its first sentence (with the failure a log
    tail states when that sentence names none, as "exited with status 2" does; "an instance"
    for the instance and variant it names), cut to ``limit`` characters, without the final
    full stop."""
    message, lines = split_reason(" ".join(reason.split()))
    first = _INSTANCE.sub("an instance ", _SENTENCE_END.split(message, 1)[0].strip())
    if ": " not in first:
        cause = log_cause(lines)
        if cause and cause not in first:
            first = f"{first.rstrip('.')}: {cause}"
    return one_line(first.rstrip(".").strip() or "no reason given", limit)


def error_code(error: BaseException) -> str | None:
    """The AWS error code of a botocore ``ClientError``, else ``None``."""
    if isinstance(error, ClientError):
        return error.response.get("Error", {}).get("Code")
    return None


def describe_error(error: BaseException, gateway_url: str, endpoint: str | None = None) -> str:
    """One line saying what went wrong and, where there is one, what to do about it; a
    failure of ``endpoint``'s model ends with where its logs are (`logs_hint`)."""
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
        return _client_error(error, endpoint)
    if isinstance(error, StreamError):
        return _stream_error(error, endpoint)
    return f"{type(error).__name__}: {one_line(str(error))}"


def _with_hint(text: str, endpoint: str | None) -> str:
    return f"{text.rstrip('.')}; {logs_hint(endpoint)}" if endpoint else text


def _client_error(error: ClientError, endpoint: str | None) -> str:
    details: dict[str, Any] = error.response.get("Error", {})
    code = details.get("Code") or "Error"
    message = (details.get("Message") or "").strip()
    if code in AUTH_ERROR_CODES:
        return f"The gateway rejected the credentials ({code}: {message}); {_CREDENTIALS_HINT}."
    if code == "ModelError":
        found = _model_message(error.response.get("OriginalMessage"))
        text = f"The model could not answer: {one_line(found) if found else short_reason(message)}"
        # A 4xx is the request's fault and says so; anything else is in the model's log.
        status = error.response.get("OriginalStatusCode")
        return (
            text if isinstance(status, int) and 400 <= status < 500 else _with_hint(text, endpoint)
        )
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


def _stream_error(error: StreamError, endpoint: str | None) -> str:
    if isinstance(error, ModelStreamError):
        code = f" ({error.error_code})" if error.error_code else ""
        detail = one_line(error.message or "no details")
        return _with_hint(f"The model's stream broke off{code}: {detail}", endpoint)
    if isinstance(error, InternalStreamFailure):
        return f"The gateway failed while streaming: {one_line(error.message or 'no details')}"
    if isinstance(error, ValidationError):
        return f"The model rejected the request: {error.message}"
    if isinstance(error, OverloadedError):
        return f"The model is overloaded, try again shortly: {error.message}"
    if isinstance(error, ProtocolError):
        return f"The answer was not in a format streamhost understands: {error.message}"
    return f"Generation failed: {error.message}"
