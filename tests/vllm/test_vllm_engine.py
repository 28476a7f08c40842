"""What is particular to vLLM's engine behind our APIs: the same tokens as ours, its
cancellation, what it cannot honour refused before the 200, and vLLM's own benchmark
client against our server on either engine."""

from __future__ import annotations

import json
import subprocess

import httpx
import pytest

from streamhost.engine.tiny import tiny_path
from tests.harness import wait_for
from tests.vllm.tier import TIER, VLLM_PYTHON

pytestmark = TIER

PROMPTS = ["what is SageMaker?", "The capital of France is", "def fibonacci(n):"]


def tokens_of(server, prompt: str, n: int = 32) -> list[int]:
    body = {
        "inputs": prompt,
        "parameters": {"max_new_tokens": n, "ignore_eos": True, "details": True},
    }
    details = httpx.post(server.url + "/generate", json=body, timeout=120).json()["details"]
    return [t["id"] for t in details["tokens"]]


def test_greedy_tokens_equal_our_engines(vllm_server, builtin_server):
    for prompt in PROMPTS:
        assert tokens_of(vllm_server, prompt) == tokens_of(builtin_server, prompt), prompt


def test_top_tokens_and_logprobs_match_our_engines(vllm_server, builtin_server):
    body = {
        "inputs": PROMPTS[0],
        "parameters": {"max_new_tokens": 8, "top_n_tokens": 3, "details": True},
    }
    ours = httpx.post(builtin_server.url + "/generate", json=body, timeout=60).json()["details"]
    theirs = httpx.post(vllm_server.url + "/generate", json=body, timeout=60).json()["details"]
    for mine, other in zip(ours["top_tokens"], theirs["top_tokens"], strict=True):
        assert [t["id"] for t in mine] == [t["id"] for t in other]
        for a, b in zip(mine, other, strict=True):
            assert b["logprob"] == pytest.approx(a["logprob"], abs=1e-3)


def gauge(server, name: str) -> int:
    metrics = httpx.get(server.url + "/metrics").text
    line = next(x for x in metrics.splitlines() if x.startswith(name + " "))
    return int(float(line.split()[-1]))


def test_a_client_that_goes_away_frees_its_sequence_in_vllm(vllm_server):
    body = {"inputs": "go on", "parameters": {"max_new_tokens": 1500, "ignore_eos": True}}
    # On two busy cores a client may read its first token only after vLLM has finished, and
    # then there is nothing left to cut. An attempt counts if vLLM was still generating when
    # the client had its first token; there are a few tries to get one.
    for _ in range(5):
        before = gauge(vllm_server, "streamhost_generated_tokens")
        with httpx.stream("POST", vllm_server.url + "/generate_stream", json=body, timeout=60) as r:
            lines = r.iter_lines()
            assert next(line for line in lines if line.startswith("data:"))
            made = gauge(vllm_server, "streamhost_generated_tokens") - before
        # Gone after its first token. The batch gauge is vLLM's own count of unfinished
        # requests; the tokens counter shows whether the request was cut.
        wait_for(lambda: gauge(vllm_server, "tgi_batch_current_size") == 0, 30, "vLLM to drop it")
        if made < 1000:
            break
    else:
        pytest.fail("vLLM finished every answer before its client had read a token")
    assert gauge(vllm_server, "streamhost_generated_tokens") - before < 1500


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"typical_p": 0.5}, "`typical_p` is not supported by the vllm engine"),
        ({"top_n_tokens": 9}, "`top_n_tokens` must be >= 0 and <= 5. Given: 9"),
    ],
)
def test_what_vllm_cannot_honour_is_refused_before_the_stream(vllm_server, parameters, message):
    body = {"inputs": "hi", "parameters": {"max_new_tokens": 4, **parameters}}
    response = httpx.post(vllm_server.url + "/generate_stream", json=body)
    assert response.status_code == 422
    assert response.json() == {
        "error": f"Input validation error: {message}",
        "error_type": "validation",
    }


def test_a_prompt_over_the_model_length_is_refused_before_the_stream(vllm_server):
    body = {"inputs": "hi " * 2100, "parameters": {"max_new_tokens": 4}}
    response = httpx.post(vllm_server.url + "/generate_stream", json=body)
    assert response.status_code == 422
    assert "must be <= 2048" in response.json()["error"]


def test_info_and_chat_logprobs_on_vllm(vllm_server):
    info = httpx.get(vllm_server.url + "/info").json()
    assert info["model_dtype"] == "float32" and info["max_total_tokens"] == 2048
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 4,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": 2,
    }
    out = httpx.post(vllm_server.url + "/v1/chat/completions", json=body, timeout=60).json()
    content = out["choices"][0]["logprobs"]["content"]
    assert len(content) == 4 and all(len(c["top_logprobs"]) == 2 for c in content)


@pytest.mark.parametrize("backend", ["openai", "openai-chat"])
@pytest.mark.parametrize("engine", ["vllm", "builtin"])
def test_vllms_benchmark_client_runs_against_our_server(
    vllm_server, builtin_server, tmp_path, backend, engine
):
    server = vllm_server if engine == "vllm" else builtin_server
    endpoint = "/v1/chat/completions" if backend == "openai-chat" else "/v1/completions"
    result = tmp_path / "result.json"
    argv = [
        *[VLLM_PYTHON, "-m", "streamhost.bench.vllm_client", "--backend", backend],
        *["--base-url", server.url, "--endpoint", endpoint, "--model", "tiny"],
        *["--tokenizer", str(tiny_path()), "--dataset-name", "random"],
        *["--random-input-len", "16", "--random-output-len", "16", "--num-prompts", "12"],
        *["--max-concurrency", "4", "--ignore-eos", "--disable-tqdm", "--save-result"],
        *["--result-dir", str(tmp_path), "--result-filename", result.name],
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(result.read_text())
    assert report["completed"] == 12 and report["failed"] == 0
    assert report["total_output_tokens"] == 12 * 16
