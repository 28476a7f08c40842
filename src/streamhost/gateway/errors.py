"""AWS-style errors: one exception type, rendered as AWS's JSON error body.

Both gateway planes raise `AwsError`; the control plane (JSON 1.1) and the runtime plane
(rest-json) only differ in which codes and statuses they use. The runtime's codes are the
`sagemaker-runtime` model's shapes (`ValidationError` 400, `ModelError` 424,
`ServiceUnavailable` 503) plus AWS's common `ThrottlingException` (429) for instances at
their concurrency limit; none of them is a 5xx for a model's fault, because botocore
retries 5xx and would run the inference again. The message wording of the
constructors below is SageMaker's own, because clients (the sagemaker SDK, Terraform, the
Kubernetes operator) match on substrings such as "Could not find" and
"Cannot create already existing".
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AwsError",
    "ModelError",
    "endpoint_config_exists",
    "endpoint_config_not_found",
    "endpoint_exists",
    "endpoint_failed",
    "endpoint_in_progress",
    "endpoint_not_found",
    "internal_failure",
    "invalid_pagination_token",
    "invalid_runtime_input",
    "model_exists",
    "model_not_found",
    "payload_too_large",
    "resource_limit_exceeded",
    "resource_not_found",
    "runtime_endpoint_not_found",
    "serialization_error",
    "service_unavailable",
    "session_gone",
    "throttling",
    "unknown_operation",
    "validation_error",
]


class AwsError(Exception):
    """An error the service answers with: an AWS error code, a message and an HTTP status."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status

    def to_response(self) -> dict[str, Any]:
        """The JSON error body botocore parses: `{"__type": code, "message": message}`."""
        return {"__type": self.code, "message": self.message}

    def headers(self) -> dict[str, str]:
        """Extra response headers: rest-json clients read the code from `x-amzn-ErrorType`."""
        return {"x-amzn-ErrorType": self.code}

    def __repr__(self) -> str:
        return f"AwsError({self.code!r}, {self.message!r}, status={self.status})"


def validation_error(message: str) -> AwsError:
    """A `ValidationException` (SageMaker's code for bad input, not-found and already-exists)."""
    return AwsError("ValidationException", message)


def serialization_error(message: str) -> AwsError:
    """The body is not JSON, or a value has the wrong JSON type for its member."""
    return AwsError("SerializationException", message)


def unknown_operation(target: str) -> AwsError:
    """The `X-Amz-Target` names no operation this service implements."""
    message = f"Operation {target!r} is not supported." if target else "Missing X-Amz-Target."
    return AwsError("UnknownOperationException", message)


def internal_failure(message: str = "An internal error occurred.") -> AwsError:
    """A fault on our side (HTTP 500); never used for bad input."""
    return AwsError("InternalFailure", message, status=500)


def resource_limit_exceeded(message: str) -> AwsError:
    """A quota was hit (modeled as `ResourceLimitExceeded` on the Create*/Update* operations)."""
    return AwsError("ResourceLimitExceeded", message)


def resource_not_found(message: str) -> AwsError:
    """The modeled `ResourceNotFound` error (used by SageMaker's newer operations)."""
    return AwsError("ResourceNotFound", message)


def invalid_pagination_token() -> AwsError:
    """A `NextToken` that this service did not issue for this listing."""
    return validation_error("Invalid pagination token.")


def model_not_found(arn: str) -> AwsError:
    """`Could not find model "arn:…".`"""
    return validation_error(f'Could not find model "{arn}".')


def model_exists(arn: str) -> AwsError:
    """`Cannot create already existing model "arn:…".`"""
    return validation_error(f'Cannot create already existing model "{arn}".')


def endpoint_config_not_found(arn: str) -> AwsError:
    """`Could not find endpoint configuration "arn:…".`"""
    return validation_error(f'Could not find endpoint configuration "{arn}".')


def endpoint_config_exists(arn: str) -> AwsError:
    """`Cannot create already existing endpoint configuration "arn:…".`"""
    return validation_error(f'Cannot create already existing endpoint configuration "{arn}".')


def endpoint_not_found(arn: str) -> AwsError:
    """`Could not find endpoint "arn:…".` (the `EndpointDeleted` waiter succeeds on it)."""
    return validation_error(f'Could not find endpoint "{arn}".')


def endpoint_exists(arn: str) -> AwsError:
    """`Cannot create already existing endpoint "arn:…".`"""
    return validation_error(f'Cannot create already existing endpoint "{arn}".')


def endpoint_in_progress(arn: str) -> AwsError:
    """Update or delete of an endpoint that is Creating, Updating or Deleting."""
    return validation_error(f'Cannot update in-progress endpoint "{arn}".')


def endpoint_failed(arn: str) -> AwsError:
    """Update of a Failed endpoint (DeleteEndpoint is the only operation a Failed one allows)."""
    return validation_error(f'Cannot update failed endpoint "{arn}".')


# -- runtime plane (rest-json, botocore `sagemaker-runtime`) ----------------------------


class ModelError(AwsError):
    """The model container answered a non-2xx status (or failed before answering): 424.

    The body carries the modeled `ModelError` members, which botocore copies into the
    `ClientError` response: `OriginalStatusCode`, `OriginalMessage`, `LogStreamArn`.
    """

    def __init__(
        self, message: str, original_status: int, original_message: str, log_stream_arn: str
    ) -> None:
        super().__init__("ModelError", message, status=424)
        self.original_status = original_status
        self.original_message = original_message
        self.log_stream_arn = log_stream_arn

    def to_response(self) -> dict[str, Any]:
        """`ModelError`'s body as SageMaker sends it (its `ErrorCode` included)."""
        client_side = 400 <= self.original_status < 500
        return {
            "__type": self.code,
            "ErrorCode": "CLIENT_ERROR_FROM_MODEL" if client_side else "SERVER_ERROR_FROM_MODEL",
            "message": self.message,
            "OriginalStatusCode": self.original_status,
            "OriginalMessage": self.original_message,
            "LogStreamArn": self.log_stream_arn,
        }


def invalid_runtime_input(message: str) -> AwsError:
    """A runtime request SageMaker would refuse (`ValidationError`, 400)."""
    return AwsError("ValidationError", message)


def runtime_endpoint_not_found(name: str, account: str) -> AwsError:
    """`Endpoint X of account Y not found.` (also for endpoints that are not InService)."""
    return AwsError("ValidationError", f"Endpoint {name} of account {account} not found.")


def payload_too_large(limit: int) -> AwsError:
    """A runtime body over the `BodyBlob` maximum; 413 as SageMaker's front end answers."""
    return AwsError("ValidationError", f"HTTP content length exceeded {limit} bytes.", status=413)


def service_unavailable(message: str) -> AwsError:
    """No instance can take the request right now (503: botocore retries it, rightly)."""
    return AwsError("ServiceUnavailable", message, status=503)


def throttling(message: str) -> AwsError:
    """Every instance that could take the request is at its concurrency limit (429).

    The instances refused before doing any work, so a retry is safe: botocore retries
    `ThrottlingException` by default, with backoff, in both its retry modes.
    """
    return AwsError("ThrottlingException", message, status=429)


def session_gone(session_id: str) -> AwsError:
    """A sticky session whose instance has stopped: never silently re-routed elsewhere."""
    return AwsError(
        "ValidationError",
        f"Session {session_id} is no longer available: the instance that held it has "
        "stopped. Start a new session with SessionId=NEW_SESSION.",
    )
