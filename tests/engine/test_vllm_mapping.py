"""Our SamplingParams as vLLM's: every field mapped, what vLLM cannot honour refused, and
log-probabilities asked for only when the API reports them. (A pure function: this runs
without vLLM; tests/vllm runs the mapping through vLLM itself.)"""

from __future__ import annotations

import pytest

from streamhost.engine import SamplingParams, ValidationError
from streamhost.engine.vllm import vllm_sampling


def test_greedy_is_temperature_zero_and_the_rest_carries_over():
    params = SamplingParams(
        stop=["\n\n"],
        seed=7,
        repetition_penalty=1.2,
        frequency_penalty=0.5,
        presence_penalty=0.25,
        ignore_eos=True,
        include_stop_str_in_output=False,
    )
    mapped = vllm_sampling(params, 12)
    assert mapped["temperature"] == 0.0 and "top_p" not in mapped
    assert mapped["max_tokens"] == 12 and mapped["ignore_eos"] is True
    assert mapped["stop"] == ["\n\n"] and mapped["include_stop_str_in_output"] is False
    assert (mapped["seed"], mapped["repetition_penalty"]) == (7, 1.2)
    assert (mapped["frequency_penalty"], mapped["presence_penalty"]) == (0.5, 0.25)


def test_sampling_knobs_and_vllms_neutral_values():
    mapped = vllm_sampling(SamplingParams(do_sample=True, temperature=0.7, top_k=40), 5)
    assert (mapped["temperature"], mapped["top_k"], mapped["top_p"]) == (0.7, 40, 1.0)
    plain = vllm_sampling(SamplingParams(do_sample=True), 5)
    assert (plain["temperature"], plain["top_k"], plain["repetition_penalty"]) == (1.0, 0, 1.0)
    assert plain["stop"] is None


@pytest.mark.parametrize(
    ("params", "logprobs"),
    [
        (SamplingParams(logprobs=False), None),  # OpenAI without `logprobs`: nothing asked
        (SamplingParams(logprobs=True), 0),  # TGI's token logprob: the chosen token only
        (SamplingParams(top_n_tokens=3), 3),  # alternatives as well
    ],
)
def test_log_probabilities_only_when_reported(params, logprobs):
    assert vllm_sampling(params, 4).get("logprobs") == logprobs


@pytest.mark.parametrize(
    ("params", "field"),
    [(SamplingParams(typical_p=0.5), "typical_p"), (SamplingParams(best_of=2), "best_of")],
)
def test_what_vllm_cannot_honour_is_refused(params, field):
    with pytest.raises(ValidationError, match=f"`{field}` is not supported by the vllm engine"):
        vllm_sampling(params, 4)
