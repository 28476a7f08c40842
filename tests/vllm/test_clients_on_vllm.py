"""The real clients' suite of the model server (tests/server), on `--engine vllm`.

The tests are the same functions as on our engine: `tgi_server` is the shared vLLM
server here (tests/vllm/conftest.py).
"""

from __future__ import annotations

from tests.server.test_sessions_and_lmi import test_session_keeps_the_conversation
from tests.server.test_tgi_clients import (
    test_bad_requests_are_refused_before_the_stream,
    test_blog_tgi_loop_prints_the_generated_text,
    test_huggingface_hub_chat_completion_streams,
    test_huggingface_hub_inference_client_streams_details,
    test_info_metrics_models_and_tokenize,
    test_malformed_json_is_400_and_oversize_is_413,
    test_openai_sdk_completions,
    test_openai_sdk_streams_chat_completions_with_usage,
    test_root_route_returns_a_list_with_the_full_text,
    test_text_generation_client_generate_and_stream,
    test_tokens_arrive_incrementally,
)
from tests.vllm.tier import TIER

pytestmark = TIER

__all__ = [
    "test_bad_requests_are_refused_before_the_stream",
    "test_blog_tgi_loop_prints_the_generated_text",
    "test_huggingface_hub_chat_completion_streams",
    "test_huggingface_hub_inference_client_streams_details",
    "test_info_metrics_models_and_tokenize",
    "test_malformed_json_is_400_and_oversize_is_413",
    "test_openai_sdk_completions",
    "test_openai_sdk_streams_chat_completions_with_usage",
    "test_root_route_returns_a_list_with_the_full_text",
    "test_session_keeps_the_conversation",
    "test_text_generation_client_generate_and_stream",
    "test_tokens_arrive_incrementally",
]
