"""Failures as a person reads them: one short line, the cause once, then the next step."""

from __future__ import annotations

from botocore.exceptions import ClientError
from hypothesis import given
from hypothesis import strategies as st

from streamhost.client import ModelStreamError
from streamhost.endpoints.errors import (
    REASON_LIMIT,
    describe_error,
    log_cause,
    not_in_service,
    short_reason,
    split_reason,
)

# FailureReasons as the gateway writes them (provisioner._wait_healthy), log tail included.
LOAD_FAILED = (
    "Instance alltraffic-0d7d15dc of variant AllTraffic could not load its model: "
    "ModelLoadError: model folder /tmp/m/no-model does not exist. Last log lines: "
    "2026-12-03 10:34:34,257 INFO streamhost: serving /tmp/m/no-model (tgi API) on "
    "http://127.0.0.1:51379 | INFO:     Started server process [29084] | INFO:     Waiting for "
    "application startup. | INFO:     Application startup complete. | INFO:     Uvicorn running "
    "on http://127.0.0.1:51379 (Press CTRL+C to quit) | 2026-12-03 10:34:45,489 ERROR "
    "streamhost.server: model failed to load: ModelLoadError: model folder /tmp/m/no-model "
    "does not exist"
)
EXITED = (
    "Instance alltraffic-a9fc0cb9 of variant AllTraffic exited with status 2 before passing "
    "its health check. Last log lines: streamhost serve-model: MAX_INPUT_TOKENS: Input should "
    "be a valid integer, unable to parse string as an integer"
)
CRASHED = (
    "Instance alltraffic-1 of variant AllTraffic exited with status 1 before passing its "
    'health check. Last log lines: Traceback (most recent call last): | File "x.py", line 1, '
    "in <module> | RuntimeError: CUDA out of memory | Loading weights: 100%|████| 39/39"
)


def test_a_failure_reason_keeps_its_first_sentence_and_drops_the_log_tail() -> None:
    assert short_reason(LOAD_FAILED) == (
        "an instance could not load its model: "
        "ModelLoadError: model folder /tmp/m/no-model does not exist"
    )


def test_a_reason_that_names_no_cause_takes_the_one_its_log_states() -> None:
    assert short_reason(EXITED) == (
        "an instance exited with status 2 before passing "
        "its health check: streamhost serve-model: MAX_INPUT_TOKENS: Input should be a valid "
        "integer, unable to parse string as an integer"
    )


def test_the_last_line_stating_a_failure_is_the_cause_in_a_log() -> None:
    _, lines = split_reason(CRASHED)
    assert lines[-1].startswith("Loading weights: 100%|████|")  # " | " splits, "|" does not
    assert log_cause(lines) == "RuntimeError: CUDA out of memory"
    assert log_cause(["INFO: Started server process [1]", "Waiting"]) is None
    assert log_cause(["2026-01-01 10:00:00,000 ERROR streamhost.server: it broke"]) == "it broke"


def test_a_long_cause_is_cut_to_the_limit_with_an_ellipsis() -> None:
    reason = "could not load: " + "x" * 500 + ". Last log lines: a | b"
    short = short_reason(reason)
    assert len(short) == REASON_LIMIT and short.endswith("…")


def test_an_endpoint_that_failed_is_one_line_with_the_cause_once_then_its_logs() -> None:
    line = not_in_service("broken", "Failed", LOAD_FAILED)
    assert line == (
        "endpoint broken is Failed: an instance could not "
        "load its model: ModelLoadError: model folder /tmp/m/no-model does not exist; "
        "see: streamhost logs broken"
    )
    assert line.count("does not exist") == 1 and " | " not in line
    assert not_in_service("new", "Creating", None) == "endpoint new is Creating, not InService"


def _model_error(status: int, message: str) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": "ModelError", "Message": f"Received error ({status})"},
            "OriginalStatusCode": status,
            "OriginalMessage": message,
        },
        "InvokeEndpoint",
    )


def test_a_model_failure_points_at_the_endpoint_s_logs() -> None:
    error = _model_error(0, "The container closed the connection before answering (reset).")
    assert describe_error(error, "http://g", "chat") == (
        "The model could not answer: The container closed the connection before answering "
        "(reset); see: streamhost logs chat"
    )


def test_a_refused_request_says_why_without_sending_to_the_logs() -> None:
    error = _model_error(422, '{"error":"Input validation error: too long"}')
    assert describe_error(error, "http://g", "chat") == (
        "The model could not answer: Input validation error: too long"
    )


def test_a_broken_stream_is_one_line_pointing_at_the_logs() -> None:
    error = ModelStreamError("line one\nline two " + "y" * 400, error_code="StreamBroken")
    text = describe_error(error, "http://g", "chat")
    assert "\n" not in text and text.endswith("; see: streamhost logs chat")
    assert len(text) < REASON_LIMIT + 100


@given(st.text(max_size=2000), st.lists(st.text(max_size=200), max_size=20))
def test_a_short_reason_is_one_line_within_the_limit(message: str, lines: list[str]) -> None:
    reason = message + (" Last log lines: " + " | ".join(lines) if lines else "")
    short = short_reason(reason)
    assert 0 < len(short) <= REASON_LIMIT
    assert "\n" not in short and "Last log lines:" not in short
