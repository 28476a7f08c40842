"""The built-in models: ``tiny``, a small random Llama with a real BPE tokenizer, the
larger random ``random-*`` ones, and ``tiny-chat``, a small trained Llama that answers in
simple English.

``tiny`` is built deterministically from a fixed seed by this module, saved as an ordinary
Hugging Face folder in the cache directory and loaded through the normal loader, so that
everything downstream (batching, streaming, every API, the UI) runs for real without a
download. ``tiny-chat`` ships with the package as such a folder (``data/tiny-chat``, trained
by ``scripts/train_chat_model.py``) and is loaded from there.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path

log = logging.getLogger("streamhost.engine")

# v2: the JSON files no longer name the transformers that wrote them, so the folder is
# the same bytes from any environment (the vLLM tier's pins its own transformers).
TINY_VERSION = "tiny-v2"
SEED = 20230801
VOCAB_SIZE = 2048
HIDDEN_SIZE = 256
INTERMEDIATE_SIZE = 704
NUM_LAYERS = 4
NUM_HEADS = 4
CONTEXT_WINDOW = 8192
# Scale of the output projection: large enough that logits are decisive (greedy decoding
# does not flip between batched and unbatched arithmetic), small enough that sampling at
# temperature 1 still varies.
LM_HEAD_STD = 0.25

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def cache_root() -> Path:
    """Directory under which streamhost caches built models."""
    base = os.environ.get("STREAMHOST_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "streamhost"
    )
    return Path(base)


def tiny_path() -> Path:
    """Folder of the built-in tiny model, building it first if needed."""
    return _build_once(TINY_VERSION, build_tiny)


# Random models with a real model's shape (and the tiny tokenizer), for benchmarks on a GPU
# where the tiny model is too small to load the device. Built on first use like ``tiny``.
RANDOM_SHAPES = {
    # TinyLlama-1.1B's layout (~1.0B parameters) with the tiny tokenizer's 647 tokens.
    "random-1b": {
        "hidden_size": 2048,
        "intermediate_size": 5632,
        "num_hidden_layers": 22,
        "num_attention_heads": 32,
        "num_key_value_heads": 4,
    },
}


def random_model_path(name: str) -> Path:
    """Folder of the random model ``name`` (a key of :data:`RANDOM_SHAPES`), in bfloat16."""
    if name not in RANDOM_SHAPES:
        raise ValueError(f"unknown random model {name!r}; choose from {', '.join(RANDOM_SHAPES)}")
    return _build_once(_version(name), lambda folder: build_tiny(folder, name))


CHAT_MODEL = "tiny-chat"


def chat_model_path() -> Path:
    """Folder of the built-in ``tiny-chat`` model, shipped with the package."""
    return Path(str(resources.files("streamhost.engine").joinpath(f"data/{CHAT_MODEL}")))


def built_in_names() -> list[str]:
    """The built-in model ids: ``tiny``, ``tiny-chat`` and the :data:`RANDOM_SHAPES` ones."""
    return ["tiny", CHAT_MODEL, *RANDOM_SHAPES]


def built_in_path(name: str) -> Path:
    """Folder of the built-in model ``name``, building it first if needed."""
    if name == "tiny":
        return tiny_path()
    return chat_model_path() if name == CHAT_MODEL else random_model_path(name)


def is_random_model(model_id: str | None) -> bool:
    """True for the models whose text is random by design: ``tiny``, the random shapes and
    ``synthetic:*`` (no weights at all)."""
    if not model_id:
        return False
    return model_id == "tiny" or model_id in RANDOM_SHAPES or model_id.startswith("synthetic:")


def _version(shape: str) -> str:
    return TINY_VERSION if shape == "tiny" else f"{shape}-v2"


def _build_once(version: str, build) -> Path:
    target = cache_root() / "models" / version
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Several processes (test workers, instances) may ask at once: one builds, the
    # others wait on the lock and then find the finished folder.
    with open(target.parent / f".{version}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "config.json").exists():
            log.info("building the %s model into %s (once)", version, target)
            staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=target.parent))
            try:
                build(staging)
                os.replace(staging, target)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    shutil.rmtree(staging)
    return target


def corpus_text() -> str:
    """The text the tiny tokenizer is trained on (shipped with the package)."""
    return resources.files("streamhost.engine").joinpath("data/tiny_corpus.txt").read_text("utf-8")


def build_tokenizer(
    lines: list[str] | None = None,
    vocab_size: int = VOCAB_SIZE,
    context_window: int = CONTEXT_WINDOW,
):
    """Train a byte-level BPE tokenizer with the built-in models' special tokens and chat
    template on `lines` (deterministic; tiny's own: the text the project ships)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus_text().splitlines() if lines is None else lines, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        unk_token=None,
        pad_token="<|pad|>",
        additional_special_tokens=["<|im_start|>", "<|endoftext|>"],
        chat_template=CHAT_TEMPLATE,
        model_max_length=context_window,
    )


def build_tiny(folder: Path, shape: str = "tiny") -> Path:
    """Build the tiny model (or a :data:`RANDOM_SHAPES` one, in bfloat16) into ``folder``
    from the fixed seed; returns the folder."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer()
    eos_ids = [tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
    layout = RANDOM_SHAPES.get(shape) or {
        "hidden_size": HIDDEN_SIZE,
        "intermediate_size": INTERMEDIATE_SIZE,
        "num_hidden_layers": NUM_LAYERS,
        "num_attention_heads": NUM_HEADS,
        "num_key_value_heads": NUM_HEADS,
    }
    dtype = torch.float32 if shape == "tiny" else torch.bfloat16
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        **layout,
        max_position_embeddings=CONTEXT_WINDOW,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eos_ids,
        pad_token_id=tokenizer.pad_token_id,
        dtype=str(dtype).removeprefix("torch."),
    )
    generator = torch.Generator().manual_seed(SEED)
    model = LlamaForCausalLM(config).to(dtype)
    with torch.no_grad():
        # Re-initialise every parameter from our own generator so the weights do not
        # depend on the global RNG or on transformers' init order.
        for name, param in sorted(model.named_parameters()):
            if name.endswith("norm.weight"):
                param.fill_(1.0)
            else:
                std = LM_HEAD_STD if name == "lm_head.weight" else 0.02
                param.copy_(torch.randn(param.shape, generator=generator) * std)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eos_ids,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    for name in ("config.json", "generation_config.json"):  # as transformers writes them
        settings = json.loads((folder / name).read_text())
        settings.pop("transformers_version", None)
        (folder / name).write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
    (folder / "README.md").write_text(
        f"# streamhost {shape}\n\nA random {layout['num_hidden_layers']}-layer Llama built by "
        f"streamhost from a fixed seed ({_version(shape)}). Its text is not meaningful; it exists "
        "to exercise serving.\n"
    )
    return folder


def folder_digest(folder: Path) -> str:
    """SHA-256 over the model folder's weight and tokenizer files (for reproducibility)."""
    digest = hashlib.sha256()
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        digest.update((folder / name).read_bytes())
    return digest.hexdigest()
