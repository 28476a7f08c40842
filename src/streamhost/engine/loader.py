"""Loading a causal LM and its tokenizer: the built-in ``tiny``, a folder, or a hub id."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamhost.engine.config import EngineConfig

if TYPE_CHECKING:
    from streamhost.engine.batch import BatchRunner

log = logging.getLogger("streamhost.engine")

# Files a causal LM needs; the rest of a hub repository (other formats, images) is skipped.
HUB_PATTERNS = [
    "*.json",
    "*.safetensors",
    "*.model",
    "*.tiktoken",
    "*.txt",
    "*.jinja",
    "tokenizer*",
]
# A local folder must hold at least one of each, or transformers cannot load it.
_WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt", "*.pth")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "*.tiktoken", "vocab.json", "*.vocab")


class ModelLoadError(Exception):
    """A model that cannot be loaded; the message is one line that says what to do."""


@dataclass
class Vocab:
    """Token facts the scheduler needs, over a transformers tokenizer."""

    tokenizer: Any
    eos_ids: frozenset[int]
    special_ids: frozenset[int]

    def __post_init__(self) -> None:
        self._texts: dict[int, str] = {}
        # The detokenizer decodes twice per token: call the Rust tokenizer directly (4x
        # faster than the Python wrapper) when the wrapper would add nothing to its output.
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        cleans = getattr(self.tokenizer, "clean_up_tokenization_spaces", False)
        self._backend = backend if backend is not None and not cleans else None

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        """Decode ids to text."""
        if self._backend is not None:
            return self._backend.decode(ids, skip_special_tokens=skip_special_tokens)
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def token_text(self, token_id: int) -> str:
        """The text of one token on its own (cached)."""
        text = self._texts.get(token_id)
        if text is None:
            text = self.tokenizer.decode([token_id], skip_special_tokens=False)
            self._texts[token_id] = text
        return text


@dataclass
class LoadedModel:
    """A model ready to serve: weights on a device, tokenizer and limits."""

    model_id: str
    path: Path
    model: Any
    tokenizer: Any
    vocab: Vocab
    device: Any
    dtype: str
    context_window: int
    token_count: int  # rows of the embedding: valid ids are below
    sha: str | None = None

    @property
    def has_chat_template(self) -> bool:
        """True when the tokenizer carries a chat template."""
        return bool(getattr(self.tokenizer, "chat_template", None))


def resolve_model_path(model_id: str, revision: str | None, trust_remote_code: bool) -> Path:
    """Return a local folder for ``model_id``: built-in, local, or downloaded from the hub."""
    from streamhost.engine.tiny import built_in_names, built_in_path

    if model_id in built_in_names():
        return built_in_path(model_id)
    local = Path(model_id).expanduser()
    if local.is_dir():
        if not (local / "config.json").exists():
            raise ModelLoadError(f"{local} has no config.json: not a Hugging Face model folder")
        _check_model_files(local)
        return local
    if model_id.startswith((".", "/", "~")):
        raise ModelLoadError(f"model folder {model_id} does not exist")
    return _download(model_id, revision, trust_remote_code)


def _check_model_files(folder: Path) -> None:
    # Said here in one line; transformers would fail later with a message about the
    # tokenizer class or a missing file name that does not say what to put where.
    if not any(next(folder.glob(pattern), None) for pattern in _WEIGHT_FILES):
        raise ModelLoadError(
            f"model folder {folder} has no weights: put the model's *.safetensors (or "
            "pytorch_model*.bin) files beside its config.json"
        )
    if not any(next(folder.glob(pattern), None) for pattern in _TOKENIZER_FILES):
        raise ModelLoadError(
            f"model folder {folder} has no tokenizer: put the model's tokenizer.json (or "
            "tokenizer.model, vocab.json) beside its config.json"
        )


def _download(model_id: str, revision: str | None, trust_remote_code: bool) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    patterns = [*HUB_PATTERNS, "*.py"] if trust_remote_code else HUB_PATTERNS
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    log.info(
        "fetching %s%s from the Hugging Face hub", model_id, f"@{revision}" if revision else ""
    )
    try:
        # snapshot_download shows a progress bar per file and uses the local cache
        # (and only it when HF_HUB_OFFLINE is set).
        return Path(snapshot_download(model_id, revision=revision, allow_patterns=patterns))
    except LocalEntryNotFoundError:
        if offline:
            raise ModelLoadError(
                f"model {model_id} is not in the local Hugging Face cache and HF_HUB_OFFLINE "
                "is set: download it on a connected machine first, or pass a local folder"
            ) from None
        raise ModelLoadError(
            f"cannot download {model_id}: the Hugging Face hub is unreachable and the model "
            "is not cached; pass a local folder or set HF_ENDPOINT"
        ) from None
    except GatedRepoError:
        raise ModelLoadError(f"{model_id} is gated: set HF_TOKEN to a token with access") from None
    except RepositoryNotFoundError:
        raise ModelLoadError(f"model {model_id} not found on the Hugging Face hub") from None
    except RevisionNotFoundError:
        raise ModelLoadError(f"revision {revision} of {model_id} not found") from None
    except OSError as exc:
        raise ModelLoadError(f"cannot download {model_id}: {exc}") from None


def pick_device(requested: str):
    """``auto`` is CUDA when present, else the CPU."""
    import torch

    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def pick_dtype(requested: str, device, config_dtype: Any):
    """Resolve ``auto``: the checkpoint's half precision on a GPU, float32 on the CPU."""
    import torch

    if requested != "auto":
        return getattr(torch, requested)
    if device.type == "cpu":
        return torch.float32
    if config_dtype in (torch.float16, torch.bfloat16, "float16", "bfloat16"):
        return getattr(torch, str(config_dtype).removeprefix("torch."))
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def load_model(config: EngineConfig) -> LoadedModel:
    """Load the model and tokenizer named in ``config`` onto its device: a Llama-family
    checkpoint with the default rope straight from its safetensors (:mod:`llama`), any other
    through transformers."""
    from safetensors import SafetensorError

    from streamhost.engine import llama
    from streamhost.engine.tokenizer import load_tokenizer

    path = resolve_model_path(config.model, config.revision, config.trust_remote_code)
    try:
        model_config = _read_json(path / "config.json")
        tokenizer = load_tokenizer(path, config.trust_remote_code)
        device = pick_device(config.device)
        config_dtype = model_config.get("dtype") or model_config.get("torch_dtype")
        dtype = pick_dtype(config.dtype, device, config_dtype)
        own_code = config.trust_remote_code and has_own_code(path, "AutoModelForCausalLM")
        if config.fast_path and not own_code and llama.loadable(path, model_config):
            model: Any = llama.load_weights(path, model_config, device, dtype)
            token_count = model.vocab_size
        else:
            from transformers import AutoModelForCausalLM

            model = AutoModelForCausalLM.from_pretrained(
                path, dtype=dtype, trust_remote_code=config.trust_remote_code
            )
            model.to(device).eval()
            token_count = model.get_input_embeddings().num_embeddings
    except (OSError, ValueError, KeyError, SafetensorError) as exc:
        detail = " ".join(str(exc).split())  # one line, whatever the library wrote
        raise ModelLoadError(f"cannot load {config.model} from {path}: {detail}") from None
    context = int(
        model_config.get("max_position_embeddings")
        or min(getattr(tokenizer, "model_max_length", 2048), 1 << 20)
    )
    log.info("loaded %s on %s (%s), context %d", config.model, device, dtype, context)
    return LoadedModel(
        model_id=config.model,
        path=path,
        model=model,
        tokenizer=tokenizer,
        vocab=make_vocab(path, tokenizer, model_config),
        device=device,
        dtype=str(dtype).removeprefix("torch."),
        context_window=context,
        token_count=token_count,
        sha=_commit_of(path),
    )


def _read_json(file: Path) -> dict:
    return json.loads(file.read_text("utf-8")) if file.is_file() else {}


def has_own_code(path: Path, auto_class: str) -> bool:
    """Whether the model folder ``path`` brings code of its own for ``auto_class``
    (``AutoTokenizer``, ``AutoModelForCausalLM``): an ``auto_map`` entry in its tokenizer or
    model config, which is all that ``trust_remote_code`` makes transformers run. A folder
    without one loads as it would untrusted (the Llama fast path, the plain tokenizer)."""
    for name in ("tokenizer_config.json", "config.json"):
        auto_map = _read_json(path / name).get("auto_map")
        if isinstance(auto_map, dict) and auto_class in auto_map:
            return True
    return False


def make_vocab(path: Path, tokenizer: Any, model_config: dict | None = None) -> Vocab:
    """The token facts of the model in ``path``: end-of-sequence ids (the generation
    config's, the model config's and the tokenizer's) and special ids (those and the
    tokenizer's own)."""
    if model_config is None:
        model_config = _read_json(path / "config.json")
    eos = _eos_ids(path, model_config, tokenizer)
    return Vocab(tokenizer, eos, frozenset(tokenizer.all_special_ids) | eos)


def _eos_ids(path: Path, model_config: dict, tokenizer) -> frozenset[int]:
    ids: set[int] = set()
    for source in (_read_json(path / "generation_config.json"), model_config):
        value = source.get("eos_token_id")
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return frozenset(ids)


def _commit_of(path: Path) -> str | None:
    # Hub snapshots live in .../snapshots/<commit>/.
    return path.name if path.parent.name == "snapshots" else None


def make_runner(model, device: Any, fast_path: bool = True) -> BatchRunner:
    """The runner for ``model`` (transformers' model, or :class:`llama.LlamaWeights`): the lean
    Llama-family path where it applies."""
    from streamhost.engine import llama
    from streamhost.engine.runner import TorchRunner

    if isinstance(model, llama.LlamaWeights):
        return llama.LlamaRunner(model, device)
    if fast_path and llama.supports(model):
        return llama.LlamaRunner(llama.LlamaWeights.from_model(model), device)
    return TorchRunner(model, device)
