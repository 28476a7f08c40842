"""Model loading: the tiny model is deterministic; missing models fail in one line."""

from __future__ import annotations

import json

import pytest

from streamhost.engine.config import EngineConfig
from streamhost.engine.loader import ModelLoadError, load_model, resolve_model_path
from streamhost.engine.tiny import build_tiny, folder_digest


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
