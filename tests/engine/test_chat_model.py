"""The built-in ``tiny-chat`` model: shipped small, loaded like any folder, answers in words."""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from pathlib import Path

import pytest

from streamhost.endpoints.conversation import render_prompt
from streamhost.engine import Engine, EngineConfig, FinishReason, SamplingParams
from streamhost.engine.loader import load_model
from streamhost.engine.tiny import (
    CHAT_MODEL,
    built_in_names,
    built_in_path,
    is_random_model,
)

from .conftest import collect

REPO = Path(__file__).resolve().parents[2]
# Short of a word: punctuation around it, as in "pizza." or "(model)".
_EDGES = "\"'`()[]{}*,.;:!?"


def suggested_prompts() -> tuple[str, ...]:
    """The chat UI's suggested prompts, read from its source (importing it runs the page)."""
    tree = ast.parse((REPO / "src/streamhost/ui/app.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == (
            "SUGGESTED_PROMPTS"
        ):
            return ast.literal_eval(node.value)
    raise AssertionError("app.py has no SUGGESTED_PROMPTS")


@pytest.fixture(scope="module")
def corpus_words() -> set[str]:
    """Every word of the text the model was trained on, lower case."""
    path = REPO / "scripts" / "train_chat_model.py"
    spec = importlib.util.spec_from_file_location("train_chat_model", path)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = script  # its dataclasses look themselves up there
    try:
        spec.loader.exec_module(script)
        texts = script.corpus_texts()
    finally:
        del sys.modules[spec.name]
    return {w.lower() for text in texts for w in re.findall(r"[A-Za-z]+", text)}


@pytest.fixture(scope="module")
def chat_engine():
    engine = Engine.load(EngineConfig(model=CHAT_MODEL))
    yield engine
    engine.shutdown()


def test_tiny_chat_is_a_built_in_model_shipped_as_a_small_folder():
    assert CHAT_MODEL in built_in_names()
    folder = built_in_path(CHAT_MODEL)
    assert (folder / "config.json").exists() and (folder / "tokenizer.json").exists()
    assert (folder / "model.safetensors").stat().st_size <= 8 * 2**20


def test_tiny_chat_loads_through_the_loader_in_float32_on_the_cpu():
    loaded = load_model(EngineConfig(model=CHAT_MODEL))
    assert loaded.path == built_in_path(CHAT_MODEL)
    assert loaded.dtype == "float32"  # shipped in float16, cast for the CPU
    assert loaded.has_chat_template
    assert loaded.tokenizer.convert_tokens_to_ids("<|im_end|>") in loaded.vocab.eos_ids


@pytest.mark.parametrize("prompt", suggested_prompts())
async def test_greedy_answers_to_the_suggested_prompts_are_words_of_the_corpus(
    chat_engine, corpus_words, prompt
):
    # The prompt as the chat UI sends it (User: ... / Assistant:).
    events = await collect(
        chat_engine.submit(render_prompt([], prompt), SamplingParams(max_new_tokens=120))
    )
    text = events[-1].generated_text
    assert "\ufffd" not in text
    tokens = text.split()
    assert len(tokens) >= 10, text
    words = [t.strip(_EDGES) for t in tokens]
    known = [w for w in words if w.isalpha() and w.lower() in corpus_words]
    assert len(known) >= 0.8 * len(tokens), text


async def test_greedy_answer_ends_with_end_of_turn_before_the_next_user_turn(chat_engine):
    events = await collect(
        chat_engine.submit(render_prompt([], "what is life?"), SamplingParams(max_new_tokens=300))
    )
    assert events[-1].finish_reason == FinishReason.EOS_TOKEN
    assert "User:" not in events[-1].generated_text


async def test_chat_template_prompt_gets_an_answer_in_words(chat_engine):
    prompt = chat_engine.apply_chat_template([{"role": "user", "content": "what is life?"}])
    events = await collect(chat_engine.submit(prompt, SamplingParams(max_new_tokens=120)))
    assert events[-1].finish_reason == FinishReason.EOS_TOKEN
    assert "life" in events[-1].generated_text.lower()


@pytest.mark.parametrize(
    ("model_id", "random"),
    [
        ("tiny", True),
        ("random-1b", True),
        ("synthetic:25", True),
        ("tiny-chat", False),
        ("Qwen/Qwen2.5-0.5B-Instruct", False),
        (None, False),
    ],
)
def test_random_models_are_the_ones_whose_text_is_random_by_design(model_id, random):
    assert is_random_model(model_id) is random
