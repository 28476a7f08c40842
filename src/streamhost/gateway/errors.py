"""AWS-style errors: one exception type, rendered as AWS's JSON error body.

Both gateway planes raise `AwsError`; the control plane (JSON 1.1) and the runtime plane
(rest-json) only differ in which codes and statuses they use. The message wording of the
constructors below is SageMaker's own, because clients (the sagemaker SDK, Terraform, the
Kubernetes operator) match on substrings such as "Could not find" and
"Cannot create already existing".
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AwsError",
    "endpoint_config_exists",
    "endpoint_config_not_found",
    "endpoint_exists",
    "endpoint_failed",
    "endpoint_in_progress",
    "endpoint_not_found",
    "internal_failure",
    "invalid_pagination_token",
    "model_exists",
    "model_not_found",
    "resource_limit_exceeded",
    "resource_not_found",
    "serialization_error",
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
