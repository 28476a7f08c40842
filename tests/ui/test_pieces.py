"""The UI's pure pieces: prompts, request bodies, API detection, credentials, error text."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from streamhost.command import CommandError
from streamhost.endpoints.conversation import Turn, clean_text, render_prompt, turn_prompt
from streamhost.endpoints.discovery import api_of_container
from streamhost.endpoints.errors import describe_error
from streamhost.endpoints.invocation import GenerationParameters, request_body
from streamhost.ui.settings import UISettings
from streamhost.up import ensure_credentials

TGI = "763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-tgi-inference:2.1-tgi2.0-gpu-py310-cu121-ubuntu22.04"
LMI = "763104351884.dkr.ecr.us-east-1.amazonaws.com/djl-inference:0.23.0-deepspeed0.9.5-cu118"


def test_the_prompt_renders_earlier_turns_before_the_new_one() -> None:
    turns = [Turn("hi", " hello!"), Turn("how are you?", " fine")]
    assert render_prompt(turns, "bye") == (
        "User: hi\nAssistant: hello!\nUser: how are you?\nAssistant: fine\nUser: bye\nAssistant:"
    )


def test_the_oldest_turns_are_dropped_when_the_prompt_is_too_long() -> None:
    turns = [Turn(f"question {n}", "x" * 50) for n in range(10)]
    prompt = render_prompt(turns, "last", max_chars=300)
    assert len(prompt) <= 300
    assert "question 9" in prompt and "question 0" not in prompt
    assert prompt.endswith("User: last\nAssistant:")


def test_failed_turns_without_text_are_left_out_of_the_prompt() -> None:
    turns = [Turn("broken", error="gateway down"), Turn("ok", " yes")]
    assert render_prompt(turns, "next").startswith("User: ok\n")


def test_a_session_turn_continues_the_text_the_server_keeps() -> None:
    assert turn_prompt("again", first=False) == "\nUser: again\nAssistant:"


def test_control_characters_are_removed_but_newlines_kept() -> None:
    assert clean_text("a\x1db\x00\nc\td\x7f") == "ab\nc\td"


def test_tgi_body_streams_and_carries_the_sliders() -> None:
    body = json.loads(request_body("tgi", "hi", GenerationParameters(17, 0.7)))
    assert body == {
        "inputs": "hi",
        "parameters": {"max_new_tokens": 17, "temperature": 0.7, "return_full_text": False},
        "stream": True,
    }


def test_lmi_body_samples_so_that_the_temperature_counts() -> None:
    body = json.loads(request_body("lmi", "hi", GenerationParameters(5, 1.3)))
    assert body == {
        "inputs": "hi",
        "parameters": {
            "max_new_tokens": 5,
            "temperature": 1.3,
            "return_full_text": False,
            "do_sample": True,
        },
    }


@pytest.mark.parametrize(
    ("container", "api"),
    [
        ({"Image": TGI, "Environment": {"HF_MODEL_ID": "tiny"}}, "tgi"),
        ({"Image": LMI, "ModelDataUrl": "s3://bucket/model.tar.gz"}, "lmi"),
        ({"Image": "streamhost", "Environment": {"HF_MODEL_ID": "tiny"}}, "tgi"),
        ({"Image": "streamhost", "ModelDataUrl": "file:///m.tar.gz"}, "lmi"),
        ({"Image": "streamhost:lmi"}, "lmi"),
        ({"Image": "nginx:latest"}, "unknown"),
    ],
)
def test_the_api_is_read_from_the_image(container: dict, api: str) -> None:
    assert api_of_container(container) == api


def test_ui_settings_come_from_the_environment() -> None:
    assert UISettings.from_environ({}) == UISettings("http://127.0.0.1:8080", "default")
    settings = UISettings.from_environ(
        {"STREAMHOST_GATEWAY_URL": "http://h:1/", "STREAMHOST_ENDPOINT": "mine"}
    )
    assert settings == UISettings("http://h:1", "mine")


def test_first_run_creates_a_private_key_pair_and_later_runs_reuse_it(tmp_path: Path) -> None:
    path = tmp_path / "config" / "streamhost" / "credentials"
    keys = ensure_credentials(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keys["aws_access_key_id"].startswith("SH") and len(keys["aws_access_key_id"]) == 20
    assert len(keys["aws_secret_access_key"]) >= 40
    assert ensure_credentials(path) == keys
    assert "[default]" in path.read_text()


def test_a_credentials_file_without_keys_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "credentials"
    path.write_text("[other]\naws_access_key_id = x\n")
    with pytest.raises(CommandError, match="has no \\[default\\]"):
        ensure_credentials(path)


def test_a_model_error_shows_the_model_s_own_message() -> None:
    error = ClientError(
        {
            "Error": {"Code": "ModelError", "Message": "Received client error (422)"},
            "OriginalMessage": '{"error":"Input validation error: too long","error_type":"validation"}',
        },
        "InvokeEndpointWithResponseStream",
    )
    assert describe_error(error, "http://g") == (
        "The model could not answer: Input validation error: too long"
    )


def test_an_unreachable_gateway_says_how_to_start_one() -> None:
    message = describe_error(EndpointConnectionError(endpoint_url="http://g:1/"), "http://g:1")
    assert message.startswith("Cannot reach the streamhost gateway at http://g:1")
    assert "streamhost up" in message
