"""The gateway's HTTP/1.1 server protocol: uvicorn's, with limits on a request's head and a
deadline for sending it (`streamhost.uvicorn_http`), refusing in AWS's error form.

A request that does not arrive whole within `--request-timeout` is answered 408
`RequestTimeoutException` (botocore retries it); a URL over 16 KiB, 414
`RequestURITooLongException`; a header field over 16 KiB, more than 100 of them or more
than 64 KiB in all, 431 `RequestHeaderFieldsTooLargeException`. Each carries an
`x-amzn-RequestId` and `x-amzn-ErrorType`, as the gateway's other errors do, and the
connection is closed.
"""

from __future__ import annotations

import orjson

from ..uvicorn_http import (
    HeaderFieldsTooLarge,
    RequestRefused,
    RequestTimedOut,
    UriTooLong,
    error_response,
)
from .errors import AwsError
from .runtime import new_request_id

__all__ = ["refusal"]

_CODES = {
    RequestTimedOut: "RequestTimeoutException",
    UriTooLong: "RequestURITooLongException",
    HeaderFieldsTooLarge: "RequestHeaderFieldsTooLargeException",
}


def refusal(error: RequestRefused) -> bytes:
    """The answer to a request the protocol refuses: an AWS error, as `send_error` words it."""
    aws = AwsError(_CODES.get(type(error), "ValidationError"), str(error), status=error.status)
    headers = [
        (b"content-type", b"application/json"),
        (b"x-amzn-requestid", new_request_id().encode()),
    ]
    headers += [(k.lower().encode(), v.encode()) for k, v in aws.headers().items()]
    return error_response(aws.status, headers, orjson.dumps(aws.to_response()))
