"""Payload decoders for TGI, LMI and OpenAI streams, and in-band error mapping."""

from __future__ import annotations

import pytest

from streamhost.client import (
    CompleteDecoder,
    GenerationError,
    LMIOutputsDecoder,
    OpenAIDecoder,
    OverloadedError,
    ProtocolError,
    StreamError,
    TextDelta,
    TokenDecoder,
    ValidationError,
    decoder_for,
    detect_format,
    error_from_payload,
    error_from_response,
)


def tgi_event(index, text, *, special=False, generated_text=None, details=None):
    token = {"id": index, "text": text, "logprob": -0.25, "special": special}
    return {"index": index, "token": token, "generated_text": generated_text, "details": details}


def test_tgi_token_event_gives_text_with_id_and_logprob():
    delta = TokenDecoder().feed(tgi_event(1, " Hello"))
    assert delta == TextDelta(" Hello", token_id=1, logprob=-0.25)


def test_tgi_special_token_adds_no_text_but_counts_as_generated():
    decoder = TokenDecoder()
    decoder.feed(tgi_event(1, "Hi"))
    assert decoder.feed(tgi_event(2, "</s>", special=True, generated_text="Hi")) is None
    result = decoder.result()
    assert (result.text, result.generated_tokens, result.generated_text) == ("Hi", 2, "Hi")


def test_tgi_final_details_give_finish_reason_and_token_count():
    decoder = TokenDecoder()
    details = {"finish_reason": "length", "generated_tokens": 7, "seed": None}
    decoder.feed(tgi_event(1, "x", generated_text="x", details=details))
    result = decoder.result()
    assert (result.finish_reason, result.generated_tokens, result.details) == ("length", 7, details)


@pytest.mark.parametrize(
    ("error_type", "exception"),
    [
        ("validation", ValidationError),
        ("overloaded", OverloadedError),
        ("generation", GenerationError),
        ("incomplete_generation_stream", GenerationError),
    ],
)
def test_tgi_in_band_error_raises_the_matching_exception(error_type, exception):
    with pytest.raises(exception, match="went wrong") as caught:
        TokenDecoder().feed({"error": "it went wrong", "error_type": error_type})
    assert caught.value.error_type == error_type


def test_lmi_token_line_gives_text_and_log_prob():
    line = {"token": {"id": 304, "text": "Deep ", "log_prob": -0.05}}
    assert TokenDecoder().feed(line) == TextDelta("Deep ", token_id=304, logprob=-0.05)


def test_lmi_token_last_line_carries_generated_text_and_details():
    decoder = TokenDecoder()
    decoder.feed({"token": {"id": 1, "text": "a", "log_prob": -1.0}})
    decoder.feed(
        {
            "token": {"id": 2, "text": "b", "log_prob": -1.0},
            "generated_text": "ab",
            "details": {"finish_reason": "eos_token", "generated_tokens": 2},
        }
    )
    assert decoder.result().generated_text == "ab"
    assert decoder.result().finish_reason == "eos_token"


def test_lmi_token_error_line_raises_generation_error():
    # Streaming errors in LMI 0.26+ arrive with HTTP 200 as a final token line.
    line = {
        "token": {"id": -1, "text": "", "log_prob": -1, "special_token": True},
        "generated_text": "",
        "details": {"finish_reason": "error", "error": "CUDA out of memory"},
    }
    with pytest.raises(GenerationError, match="CUDA out of memory"):
        TokenDecoder().feed(line)


def test_lmi_special_token_spelling_adds_no_text():
    line = {"token": {"id": 2, "text": "</s>", "log_prob": -0.1, "special_token": True}}
    assert TokenDecoder().feed(line) is None


def test_lmi_outputs_line_gives_its_first_output():
    assert LMIOutputsDecoder().feed({"outputs": [" a"]}) == TextDelta(" a")


def test_lmi_outputs_empty_string_eos_adds_nothing():
    decoder = LMIOutputsDecoder()
    assert decoder.feed({"outputs": [""]}) is None
    assert decoder.result().generated_tokens == 1


@pytest.mark.parametrize(
    ("line", "exception"),
    [
        ({"code": 424, "error": "prediction failure"}, GenerationError),
        ({"code": 400, "error": "bad input"}, ValidationError),
        ({"code": 500, "message": "Batch inference failed"}, GenerationError),
    ],
)
def test_lmi_code_and_error_line_raises(line, exception):
    with pytest.raises(exception) as caught:
        LMIOutputsDecoder().feed(line)
    assert caught.value.status_code == line["code"]


def test_openai_chat_chunk_gives_delta_content():
    chunk = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}}]}
    assert OpenAIDecoder().feed(chunk) == TextDelta("Hi")


def test_openai_completion_chunk_gives_text():
    assert OpenAIDecoder().feed({"choices": [{"index": 0, "text": "Hi"}]}) == TextDelta("Hi")


def test_openai_role_only_chunk_adds_nothing():
    assert OpenAIDecoder().feed({"choices": [{"index": 0, "delta": {"role": "assistant"}}]}) is None


def test_openai_finish_reason_and_usage_land_in_the_result():
    decoder = OpenAIDecoder()
    decoder.feed({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    usage = {"prompt_tokens": 4, "completion_tokens": 9, "total_tokens": 13}
    decoder.feed({"choices": [], "usage": usage})
    result = decoder.result()
    assert (result.finish_reason, result.generated_tokens) == ("stop", 9)
    assert result.details == {"usage": usage}


def test_openai_only_choice_zero_is_streamed():
    chunk = {"choices": [{"index": 1, "text": "other"}, {"index": 0, "text": "mine"}]}
    assert OpenAIDecoder().feed(chunk) == TextDelta("mine")


def test_openai_in_band_error_with_http_status_raises_validation_error():
    # TGI's chat route sends errors after the stream started like this, then [DONE].
    with pytest.raises(ValidationError, match="too long") as caught:
        OpenAIDecoder().feed({"error": {"message": "too long", "http_status_code": 422}})
    assert caught.value.status_code == 422


def test_openai_in_band_error_with_unknown_type_raises_generation_error():
    with pytest.raises(GenerationError, match="boom"):
        OpenAIDecoder().feed({"error": {"message": "boom", "type": "server_error"}})


def test_complete_decoder_gives_the_whole_generated_text_at_once():
    decoder = CompleteDecoder()
    delta = decoder.feed({"generated_text": "all of it", "details": {"finish_reason": "length"}})
    assert delta == TextDelta("all of it")
    assert decoder.result().finish_reason == "length"


def test_a_payload_that_is_not_an_object_is_a_protocol_error():
    with pytest.raises(ProtocolError):
        TokenDecoder().feed(["not", "an", "object"])


@pytest.mark.parametrize(
    ("payload", "format"),
    [
        ({"index": 1, "token": {"id": 1, "text": "a", "logprob": 0, "special": False}}, "tgi"),
        ({"token": {"id": 1, "text": "a", "log_prob": 0}}, "lmi-token"),
        ({"outputs": ["a"]}, "lmi"),
        ({"object": "chat.completion.chunk", "choices": []}, "openai"),
        ({"choices": [{"index": 0, "text": "a"}]}, "openai"),
        ({"generated_text": "a"}, "json"),
        ({"unrelated": 1}, None),
    ],
)
def test_detect_format_recognises_each_shape(payload, format):
    assert detect_format(payload) == format


def test_decoder_for_unknown_format_is_a_value_error():
    with pytest.raises(ValueError, match="unknown stream format"):
        decoder_for("xml")


def test_error_from_payload_ignores_ordinary_payloads():
    assert error_from_payload({"token": {"text": "a"}, "details": None}) is None


def test_error_from_response_maps_sagemaker_error_type_header():
    error = error_from_response(424, b'{"message": "model failed"}', "ModelError:http://internal")
    assert isinstance(error, GenerationError)
    assert (error.message, error.status_code) == ("model failed", 424)


def test_error_from_response_reads_tgi_error_bodies():
    body = b'{"error": "Model is overloaded", "error_type": "overloaded"}'
    assert isinstance(error_from_response(429, body), OverloadedError)


def test_error_from_response_with_plain_text_body_keeps_the_text():
    error = error_from_response(404, b"Not Found")
    assert type(error) is StreamError
    assert error.message == "Not Found"
