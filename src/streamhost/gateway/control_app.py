"""The control plane on the wire: AWS JSON 1.1 (`POST /`, `X-Amz-Target: SageMaker.<Op>`).

Every answer carries `x-amzn-RequestId` and the `application/x-amz-json-1.1` content type;
errors are AWS's JSON error body with a 4xx status, so botocore raises `ClientError` with
the right code. Authentication happens before this (the gateway's SigV4 layer).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from . import errors
from .control import ControlPlane
from .errors import AwsError

__all__ = [
    "CONTENT_TYPE",
    "MAX_BODY_BYTES",
    "TARGET_PREFIX",
    "control_routes",
    "decode_body",
    "send_json",
]

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/x-amz-json-1.1"
TARGET_PREFIX = "SageMaker."
# Far above any control-plane request (the largest are model definitions with
# environment maps), far below anything that could hurt the process.
MAX_BODY_BYTES = 4 * 1024 * 1024


def control_routes(control: ControlPlane, path: str = "/") -> list[Route]:
    """Starlette routes serving `control` over JSON 1.1; mount them in the gateway app."""

    async def endpoint(request: Request) -> Response:
        request_id = str(uuid.uuid4())
        try:
            operation = _operation(request.headers.get("x-amz-target", ""))
            params = decode_body(await _read_body(request))
            result = await control.handle(operation, params)
            return _respond(200, result, request_id)
        except AwsError as error:
            return _respond(error.status, error.to_response(), request_id)
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is left to read it
        except Exception:
            log.exception("control plane request %s failed", request_id)
            return _respond(500, errors.internal_failure().to_response(), request_id)

    return [Route(path, endpoint, methods=["POST"], name="sagemaker-control")]


def decode_body(body: bytes) -> Any:
    """The JSON document of a request body (empty means `{}`); `SerializationException` if
    it is not JSON."""
    if not body.strip():
        return {}
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise errors.serialization_error("Request body is not valid JSON.") from None


def _operation(target: str) -> str:
    if not target.startswith(TARGET_PREFIX) or len(target) == len(TARGET_PREFIX):
        raise errors.unknown_operation(target)
    return target[len(TARGET_PREFIX) :]


async def _read_body(request: Request) -> bytes:
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise AwsError(
                "SerializationException",
                f"Request body exceeds {MAX_BODY_BYTES} bytes.",
                status=413,
            )
        chunks.append(chunk)
    return b"".join(chunks)


async def send_json(
    send: Any,
    status: int,
    document: dict[str, Any],
    content_type: str,
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    """An AWS JSON protocol answer (`content_type` names its version) on an ASGI `send`."""
    body = orjson.dumps(document)
    start = [
        (b"content-type", content_type.encode()),
        (b"x-amzn-requestid", str(uuid.uuid4()).encode()),
        (b"content-length", str(len(body)).encode()),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _respond(status: int, document: dict[str, Any], request_id: str) -> Response:
    return Response(
        orjson.dumps(document),
        status_code=status,
        media_type=CONTENT_TYPE,
        headers={"x-amzn-RequestId": request_id},
    )
