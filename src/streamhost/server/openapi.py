"""The model server's OpenAPI 3 document, written by hand and served at `GET /openapi.json`.

It describes the routes of one personality (TGI routes or LMI routes, OpenAI and the
SageMaker contract always) with the status codes and error bodies each can answer, so
that schema-driven tools (schemathesis, client generators) see what the server does.
Request schemas give types, not limits: limits come from the container's configuration
(`MAX_TOTAL_TOKENS`, …) and are enforced with 422s the document lists.
"""

from __future__ import annotations

from typing import Any

from streamhost import __version__

__all__ = ["openapi_document"]

_JSON = "application/json"
_SSE = "text/event-stream"
_JSONLINES = "application/jsonlines"
_TEXT = "text/plain"

_NUMBER = {"type": "number"}
_INTEGER = {"type": "integer"}
_STRING = {"type": "string"}
_BOOLEAN = {"type": "boolean"}
_STRINGS = {"type": "array", "items": _STRING}
# One server-sent event (each token event's `data` is a JSON document of the API).
_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {"data": _STRING, "event": _STRING, "id": _STRING},
}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "nullable": True}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_SCHEMAS: dict[str, Any] = {
    "TGIError": {
        "type": "object",
        "required": ["error", "error_type"],
        "properties": {"error": _STRING, "error_type": _STRING},
    },
    "LMIError": {
        "type": "object",
        "required": ["code", "type", "message"],
        "properties": {"code": _INTEGER, "type": _STRING, "message": _STRING},
    },
    "OpenAIError": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type"],
                "properties": {
                    "message": _STRING,
                    "type": _STRING,
                    "param": _nullable(_STRING),
                    "code": {},  # the HTTP status, or null
                },
            }
        },
    },
    "PingFailure": {
        "type": "object",
        "required": ["status", "error", "error_type"],
        "properties": {
            "status": {"type": "string", "enum": ["loading", "failed"]},
            "error": _STRING,
            "error_type": _STRING,
        },
    },
    "GenerateParameters": {
        "type": "object",
        "properties": {
            "best_of": _nullable(_INTEGER),
            "temperature": _nullable(_NUMBER),
            "repetition_penalty": _nullable(_NUMBER),
            "frequency_penalty": _nullable(_NUMBER),
            "top_k": _nullable(_INTEGER),
            "top_p": _nullable(_NUMBER),
            "typical_p": _nullable(_NUMBER),
            "do_sample": _BOOLEAN,
            "max_new_tokens": _nullable(_INTEGER),
            "return_full_text": _nullable(_BOOLEAN),
            "stop": _STRINGS,
            "truncate": _nullable(_INTEGER),
            "watermark": _BOOLEAN,
            "details": _BOOLEAN,
            "decoder_input_details": _BOOLEAN,
            "seed": _nullable(_INTEGER),
            "top_n_tokens": _nullable(_INTEGER),
            "ignore_eos": _BOOLEAN,
        },
    },
    "GenerateRequest": {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "inputs": _STRING,
            "parameters": _ref("GenerateParameters"),
            "stream": _BOOLEAN,
        },
    },
    "GenerateResponse": {
        "type": "object",
        "required": ["generated_text"],
        "properties": {"generated_text": _STRING, "details": _nullable({"type": "object"})},
    },
    "LMIParameters": {
        "type": "object",
        "properties": {
            "max_new_tokens": _nullable(_INTEGER),
            "do_sample": _BOOLEAN,
            "temperature": _nullable(_NUMBER),
            "top_k": _nullable(_INTEGER),
            "top_p": _nullable(_NUMBER),
            "typical_p": _nullable(_NUMBER),
            "repetition_penalty": _nullable(_NUMBER),
            "frequency_penalty": _nullable(_NUMBER),
            "presence_penalty": _nullable(_NUMBER),
            "seed": _nullable(_INTEGER),
            "stop_sequences": _nullable(_STRINGS),
            "stop": _nullable(_STRINGS),
            "details": _BOOLEAN,
            "decoder_input_details": _BOOLEAN,
            "return_full_text": _BOOLEAN,
            "truncate": _nullable(_INTEGER),
            "ignore_eos_token": _BOOLEAN,
            "ignore_eos": _BOOLEAN,
        },
    },
    "LMIRequest": {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "inputs": _STRING,
            "parameters": _ref("LMIParameters"),
            "stream": _nullable(_BOOLEAN),
        },
    },
    "OpenAICommon": {
        "type": "object",
        "properties": {
            "model": _nullable(_STRING),
            "max_tokens": _nullable(_INTEGER),
            "max_completion_tokens": _nullable(_INTEGER),
            "temperature": _nullable(_NUMBER),
            "top_p": _nullable(_NUMBER),
            "n": _nullable(_INTEGER),
            "stop": {"nullable": True, "oneOf": [_STRING, _STRINGS]},
            "seed": _nullable(_INTEGER),
            "frequency_penalty": _nullable(_NUMBER),
            "presence_penalty": _nullable(_NUMBER),
            "stream": _BOOLEAN,
            "stream_options": _nullable(
                {"type": "object", "properties": {"include_usage": _BOOLEAN}}
            ),
            "ignore_eos": _BOOLEAN,
            "top_k": _nullable(_INTEGER),
            "repetition_penalty": _nullable(_NUMBER),
        },
    },
    "ChatRequest": {
        "allOf": [
            _ref("OpenAICommon"),
            {
                "type": "object",
                "required": ["messages"],
                "properties": {
                    "messages": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "role": _STRING,
                                # Null on an assistant message only; parts other than
                                # text (and an assistant's refusal) are refused with 400.
                                "content": _nullable(
                                    {
                                        "oneOf": [
                                            _STRING,
                                            {"type": "array", "items": _ref("ContentPart")},
                                        ]
                                    }
                                ),
                            },
                        },
                    },
                    "logprobs": _BOOLEAN,
                    "top_logprobs": _nullable(_INTEGER),
                },
            },
        ]
    },
    "ContentPart": {
        "type": "object",
        "required": ["type"],
        "properties": {
            "type": {"type": "string", "enum": ["text", "refusal"]},
            "text": _STRING,
            "refusal": _STRING,
        },
    },
    "CompletionRequest": {
        "allOf": [
            _ref("OpenAICommon"),
            {
                "type": "object",
                "required": ["prompt"],
                "properties": {
                    "prompt": {"oneOf": [_STRING, _STRINGS]},
                    "logprobs": _nullable(_INTEGER),
                    "echo": _BOOLEAN,
                    "suffix": _nullable(_STRING),
                },
            },
        ]
    },
    "SessionRequest": {
        "type": "object",
        "required": ["requestType"],
        "properties": {"requestType": {"type": "string", "enum": ["NEW_SESSION", "CLOSE"]}},
    },
    "OpenAIResponse": {
        "type": "object",
        "required": ["id", "object", "choices"],
        "properties": {"id": _STRING, "object": _STRING, "choices": {"type": "array"}},
    },
    "Token": {
        "type": "object",
        "required": ["id", "text", "start", "stop"],
        "properties": {"id": _INTEGER, "text": _STRING, "start": _INTEGER, "stop": _INTEGER},
    },
    "Info": {
        "type": "object",
        "required": ["model_id", "max_concurrent_requests", "max_batch_size", "version"],
        "properties": {
            "model_id": _STRING,
            "max_concurrent_requests": _INTEGER,
            "max_input_tokens": _nullable(_INTEGER),
            "max_total_tokens": _nullable(_INTEGER),
            "max_batch_size": _INTEGER,
            "version": _STRING,
            "api": {"type": "string", "enum": ["tgi", "lmi"]},
            "state": _STRING,
        },
    },
    "Models": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {"object": _STRING, "data": {"type": "array"}},
    },
}


def _error(description: str, error_schema: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": _ref(error_schema)}}}


def _errors(api: str, *statuses: int) -> dict[str, Any]:
    """The refusals a guarded route can answer, in its API's error body."""
    schema = {"tgi": "TGIError", "lmi": "LMIError", "openai": "OpenAIError"}[api]
    meaning = {
        400: "The body is not JSON, or (OpenAI, LMI) not the expected shape.",
        413: "The body is larger than PAYLOAD_LIMIT.",
        422: "A parameter is out of range or of the wrong type (TGI's validation messages).",
        424: "The generation failed after it started (non-streaming requests).",
        429: "MAX_CONCURRENT_REQUESTS are in flight: the request was refused, not queued.",
        503: "The model is still loading, or failed to load.",
    }
    answers: dict[str, Any] = {
        "401": {"description": "An API key is configured and the request does not carry it."},
        "403": _error(
            "The instance accepts its gateway only: the instance secret is missing or wrong.",
            "TGIError",
        ),
        # Refused by the HTTP protocol (`streamhost.uvicorn_http`) before any route runs.
        "408": _error("The request did not arrive whole within --request-timeout.", "TGIError"),
        "414": _error("The URL exceeds 16 KiB.", "TGIError"),
        "431": _error(
            "A header field exceeds 16 KiB, or there are more than 100 of them or more than "
            "64 KiB in all.",
            "TGIError",
        ),
    }
    for status in statuses:
        answers[str(status)] = _error(meaning[status], schema)
    return answers


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {_JSON: {"schema": schema}}}


def _stream_or_json(json_schema: dict[str, Any], *streams: str) -> dict[str, Any]:
    content: dict[str, Any] = {_JSON: {"schema": json_schema}}
    for media_type in streams:
        content[media_type] = {"schema": _EVENT if media_type == _SSE else _STRING}
    return {
        "description": "The generation (streamed when the request asks for it).",
        "content": content,
    }


def _generate_ops(api: str) -> dict[str, Any]:
    refusals = (400, 413, 422, 424, 429, 503)
    return {
        "/": {
            "post": {
                "summary": "TGI compat route: a list with the full text, or a stream",
                "requestBody": _json_body(_ref("GenerateRequest")),
                "responses": {
                    "200": _stream_or_json(
                        {"type": "array", "items": _ref("GenerateResponse")}, _SSE
                    ),
                    **_errors(api, *refusals),
                },
            }
        },
        "/generate": {
            "post": {
                "summary": "TGI: generate, answered when done",
                "requestBody": _json_body(_ref("GenerateRequest")),
                "responses": {
                    "200": {
                        "description": "The generated text.",
                        "content": {_JSON: {"schema": _ref("GenerateResponse")}},
                    },
                    **_errors(api, *refusals),
                },
            }
        },
        "/generate_stream": {
            "post": {
                "summary": "TGI: generate, one server-sent event per token",
                "requestBody": _json_body(_ref("GenerateRequest")),
                "responses": {
                    "200": {
                        "description": "Token events; a failure after the first is in band.",
                        "content": {_SSE: {"schema": _EVENT}},
                    },
                    **_errors(api, 400, 413, 422, 429, 503),
                },
            }
        },
    }


def _lmi_ops() -> dict[str, Any]:
    operation = {
        "summary": "LMI (DJL Serving): generate, streamed as the output formatter says",
        "parameters": [{"name": "model", "in": "path", "required": True, "schema": _STRING}],
        "requestBody": _json_body(_ref("LMIRequest")),
        "responses": {
            "200": _stream_or_json(_ref("GenerateResponse"), _JSONLINES, _SSE, _TEXT),
            **_errors("lmi", 400, 413, 422, 424, 429, 503),
        },
    }
    return {
        "/predictions/{model}": {"post": operation},
        "/models/{model}/invoke": {"post": operation},
    }


def _get(summary: str, description: str, media_type: str, schema: dict[str, Any]) -> dict:
    """A GET operation that always answers 200 with one body."""
    ok = {"description": description, "content": {media_type: {"schema": schema}}}
    return {"get": {"summary": summary, "responses": {"200": ok}}}


def _container_ops(api: str) -> dict[str, Any]:
    """The routes every personality serves: health, metadata, ``/tokenize``, ``/invocations``."""
    ping_ok: dict[str, Any] = {"description": "Healthy: the model is loaded."}
    if api == "lmi":
        ping_ok["content"] = {_JSON: {"schema": {"type": "object"}}}
    ping = {
        "get": {
            "summary": "Health (the SageMaker container contract)",
            "responses": {
                "200": ping_ok,
                "503": _error("Loading, or the model failed to load.", "PingFailure"),
            },
        }
    }
    return {
        "/ping": ping,
        "/health": ping,
        "/info": _get("The model and the server's limits", "Info.", _JSON, _ref("Info")),
        "/metrics": _get("Prometheus metrics with TGI's names", "Metrics.", _TEXT, _STRING),
        "/openapi.json": _get("This document", "OpenAPI 3.0.", _JSON, {"type": "object"}),
        "/tokenize": {
            "post": {
                "summary": "TGI: the prompt's tokens with character offsets",
                "requestBody": _json_body(_ref("GenerateRequest")),
                "responses": {
                    "200": {
                        "description": "Tokens.",
                        "content": {_JSON: {"schema": {"type": "array", "items": _ref("Token")}}},
                    },
                    **_errors("tgi", 400, 413, 422, 503),
                },
            }
        },
        "/invocations": {
            "post": {
                "summary": "SageMaker invocations: TGI or LMI body, OpenAI body, or a session",
                "requestBody": _json_body(
                    {
                        "anyOf": [
                            _ref("GenerateRequest" if api == "tgi" else "LMIRequest"),
                            _ref("ChatRequest"),
                            _ref("CompletionRequest"),
                            _ref("SessionRequest"),
                        ]
                    }
                ),
                "responses": {
                    "200": _stream_or_json({}, _SSE, _JSONLINES, _TEXT),
                    **_errors(api, 400, 413, 422, 424, 429, 503),
                },
            }
        },
    }


def _openai_ops() -> dict[str, Any]:
    def generate(summary: str, request: str) -> dict[str, Any]:
        return {
            "post": {
                "summary": summary,
                "requestBody": _json_body(_ref(request)),
                "responses": {
                    "200": _stream_or_json(_ref("OpenAIResponse"), _SSE),
                    **_errors("openai", 400, 413, 422, 424, 429, 503),
                },
            }
        }

    return {
        "/v1/models": _get("OpenAI: the one model served", "Models.", _JSON, _ref("Models")),
        "/v1/chat/completions": generate("OpenAI chat completions", "ChatRequest"),
        "/v1/completions": generate("OpenAI completions", "CompletionRequest"),
    }


def openapi_document(api: str) -> dict[str, Any]:
    """The OpenAPI 3.0 document of a model server with the `tgi` or `lmi` personality."""
    paths = _container_ops(api) | _openai_ops()
    paths |= _generate_ops("tgi") if api == "tgi" else _lmi_ops()
    return {
        "openapi": "3.0.3",
        "info": {
            "title": f"streamhost model server ({api.upper()} personality)",
            "version": __version__,
            "description": (
                "A SageMaker-compatible model container speaking the TGI or LMI API and "
                "OpenAI's. Behind a streamhost gateway every route except the health and "
                "metadata ones needs the instance secret header."
            ),
        },
        "paths": paths,
        "components": {"schemas": _SCHEMAS},
    }
