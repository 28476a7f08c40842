"""Model loading: the tiny model is deterministic; missing models fail in one line."""

from __future__ import annotations

import json
import shutil

import pytest

from streamhost.engine.config import EngineConfig
from streamhost.engine.loader import ModelLoadError, has_own_code, load_model, resolve_model_path
from streamhost.engine.tiny import build_tiny, folder_digest
from streamhost.engine.tokenizer import PlainTokenizer


def test_tiny_model_is_rebuilt_bit_for_bit(tmp_path, tiny_dir):
    rebuilt = build_tiny(tmp_path / "again")
    assert folder_digest(rebuilt) == folder_digest(tiny_dir)


def test_tiny_model_is_a_normal_folder_with_a_long_context(tiny_dir):
    config = json.loads((tiny_dir / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert config["max_position_embeddings"] >= 4096
    assert (tiny_dir / "tokenizer.json").exists()
    assert (
        "chat_template" in (tiny_dir / "tokenizer_config.json").read_text()
        or (tiny_dir / "chat_template.jinja").exists()
    )


def test_missing_hub_model_offline_is_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelLoadError) as info:
        resolve_model_path("someone/not-cached-model", None, False)
    message = str(info.value)
    assert "HF_HUB_OFFLINE" in message and "\n" not in message


def test_missing_local_folder_is_one_clear_line():
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_model_path("./no/such/folder", None, False)


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match=r"config\.json"):
        resolve_model_path(str(tmp_path), None, False)


def test_local_folder_loads_through_the_same_path(tiny_dir):
    loaded = load_model(EngineConfig(model=str(tiny_dir)))
    assert loaded.has_chat_template
    assert loaded.vocab.eos_ids
    assert loaded.context_window >= 4096


def test_random_models_are_built_once_in_bfloat16_and_decode_exactly(monkeypatch, tmp_path):
    # random-1b's builder with a small grouped-query shape (random-1b itself is 2 GB; the
    # GPU benchmark builds it): bfloat16 on disk, cached, loaded by the normal loader, and
    # the lean runner's grouped-query attention decodes what transformers decodes alone,
    # with its weights read from the files (the loader's path) and from transformers' model.
    import torch
    from transformers import AutoModelForCausalLM

    from streamhost.engine import SamplingParams, tiny
    from streamhost.engine.llama import LlamaRunner, LlamaWeights
    from streamhost.engine.sampling import RowSampler

    from .conftest import greedy_alone

    monkeypatch.setenv("STREAMHOST_CACHE", str(tmp_path))
    shape = {
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
    }
    monkeypatch.setitem(tiny.RANDOM_SHAPES, "random-test", shape)
    folder = resolve_model_path("random-test", None, False)
    config = json.loads((folder / "config.json").read_text())
    assert config["dtype"] == "bfloat16"
    assert {k: config[k] for k in shape} == shape
    assert resolve_model_path("random-test", None, False) == folder  # built once

    reference = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():  # sharper attention, so that a wrong key/value head shows
        for layer in reference.model.layers:
            layer.self_attn.q_proj.weight.mul_(20)
            layer.self_attn.k_proj.weight.mul_(20)
    sharper = tmp_path / "sharper"
    reference.save_pretrained(sharper)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (folder / name).exists():
            (sharper / name).write_bytes((folder / name).read_bytes())
    loaded = load_model(EngineConfig(model=str(sharper)))
    assert isinstance(loaded.model, LlamaWeights)  # read from the files, not transformers

    class Row:
        def __init__(self, ids: list[int]) -> None:
            self.prompt_ids, self.output_ids = ids, []
            self.sampler = RowSampler(SamplingParams())

    for weights in (loaded.model, LlamaWeights.from_model(reference)):
        rows = [Row([5, 9, 33, 200, 7]), Row([11, 12, 13, 14, 15, 16, 17, 300, 301])]
        runner = LlamaRunner(weights, torch.device("cpu"))
        for row, sample in zip(rows, runner.add(rows), strict=True):
            row.output_ids.append(sample.token_id)
        for _ in range(11):
            for row, sample in zip(rows, runner.step(), strict=True):
                row.output_ids.append(sample.token_id)
        for row in rows:
            assert row.output_ids == greedy_alone(reference, row.prompt_ids, 12)


def test_unknown_random_model_name_is_refused():
    from streamhost.engine.tiny import random_model_path

    with pytest.raises(ValueError, match="random-1b"):
        random_model_path("random-9t")


def test_models_path_prints_a_built_in_folder_and_refuses_others(capsys, tiny_dir):
    from streamhost.cli import main

    assert main(["models", "path", "tiny"]) == 0
    assert capsys.readouterr().out.strip() == str(tiny_dir)
    assert main(["models", "path", "gpt-9"]) == 2
    assert (
        "the built-in models are tiny, tiny-chat, random-1b; got 'gpt-9'" in capsys.readouterr().err
    )


def test_trusting_remote_code_changes_nothing_for_a_folder_without_code(tiny_dir):
    # The original blog's serving.properties says option.trust_remote_code=true: a Llama
    # folder with no code of its own still gets the fast path and the plain tokenizer.
    from streamhost.engine.llama import LlamaWeights  # imports torch: not at collection

    loaded = load_model(EngineConfig(model=str(tiny_dir), trust_remote_code=True))
    assert isinstance(loaded.model, LlamaWeights)
    assert isinstance(loaded.tokenizer, PlainTokenizer)


@pytest.mark.slow  # transformers' model classes: ~3 s of imports
def test_a_folders_own_model_code_runs_when_trusted(tiny_dir, tmp_path, monkeypatch):
    from streamhost.engine.llama import LlamaWeights

    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    folder = tmp_path / "own-code"
    shutil.copytree(tiny_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_mine.MineForCausalLM"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_mine.py").write_text(
        "from transformers import LlamaForCausalLM\n\n\n"
        "class MineForCausalLM(LlamaForCausalLM):\n    pass\n"
    )
    assert has_own_code(folder, "AutoModelForCausalLM")
    assert not has_own_code(folder, "AutoTokenizer")
    trusted = load_model(EngineConfig(model=str(folder), trust_remote_code=True))
    assert type(trusted.model).__name__ == "MineForCausalLM"
    assert isinstance(trusted.tokenizer, PlainTokenizer)  # no tokenizer code of its own
    untrusted = load_model(EngineConfig(model=str(folder)))
    assert isinstance(untrusted.model, LlamaWeights)
