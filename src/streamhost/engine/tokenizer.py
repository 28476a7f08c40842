"""The model's tokenizer: a plain ``tokenizer.json`` directly, anything else through transformers.

A model server loads its tokenizer twice (the HTTP process validates and counts tokens,
the engine process detokenizes), and transformers' ``AutoTokenizer`` costs seconds of
imports each time (``import transformers`` alone takes 1.4–2 s here; ``AutoTokenizer``
reads the model's config through the model registry, which imports torch: 7–8 s). When a
folder's tokenizer is nothing but a ``tokenizer.json`` for the Rust ``tokenizers`` library
(``tokenizer_class`` ``TokenizersBackend`` or ``PreTrainedTokenizerFast`` with no option
that changes what that library does, as the built-in models have), :class:`PlainTokenizer`
loads it in ~10 ms with the same results: encodings, offsets, decoding, special tokens and
the chat template rendered as transformers renders it. Every other tokenizer (sentencepiece,
a model-specific class, remote code) is loaded by ``AutoTokenizer``; both offer the
methods the engine uses.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

# Tokenizer classes that are the tokenizer.json and nothing more.
PLAIN_CLASSES = frozenset({"TokenizersBackend", "PreTrainedTokenizerFast"})
# tokenizer_config.json keys that would make transformers' result differ from the file's.
_CHANGING_KEYS = ("add_bos_token", "add_eos_token", "auto_map", "add_prefix_space")
# The named special tokens, in transformers' order (all_special_ids lists them so).
_NAMED_SPECIALS = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)


def load_tokenizer(path: Path, trust_remote_code: bool = False) -> Any:
    """The tokenizer of the model folder ``path``: :class:`PlainTokenizer` where it applies
    (not for a folder whose own tokenizer code is trusted)."""
    from streamhost.engine.loader import has_own_code

    own_code = trust_remote_code and has_own_code(path, "AutoTokenizer")
    plain = PlainTokenizer.from_folder(path) if not own_code else None
    if plain is not None:
        return plain
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):  # an AddedToken as older configs write it
        return value.get("content")
    return value if isinstance(value, str) else None


class PlainTokenizer:
    """A ``tokenizer.json`` with its ``tokenizer_config.json``: the part of a transformers
    tokenizer the engine uses, with transformers' results."""

    def __init__(self, backend: Any, config: dict, chat_template: str | None) -> None:
        self.backend_tokenizer = backend
        self.clean_up_tokenization_spaces = False
        self.chat_template = chat_template
        self.model_max_length = int(config.get("model_max_length") or 1 << 30)
        self.special_tokens = {
            name: text
            for name in _NAMED_SPECIALS
            if (text := _token_text(config.get(name))) is not None
        }
        extra = config.get("extra_special_tokens") or config.get("additional_special_tokens") or []
        names = [*self.special_tokens.values(), *(t for t in map(_token_text, extra) if t)]
        self.all_special_tokens = list(dict.fromkeys(names))
        self.all_special_ids = [self.convert_tokens_to_ids(t) for t in self.all_special_tokens]
        self._template: Any = None

    @classmethod
    def from_folder(cls, path: Path) -> PlainTokenizer | None:
        """The folder's tokenizer, or None when it needs more than ``tokenizers``."""
        config_file, tokenizer_file = path / "tokenizer_config.json", path / "tokenizer.json"
        if not (config_file.is_file() and tokenizer_file.is_file()):
            return None
        config = json.loads(config_file.read_text("utf-8"))
        if config.get("tokenizer_class") not in PLAIN_CLASSES:
            return None
        if any(key in config for key in _CHANGING_KEYS) or config.get(
            "clean_up_tokenization_spaces"
        ):
            return None
        template_file = path / "chat_template.jinja"
        template = (
            template_file.read_text("utf-8")
            if template_file.is_file()
            else config.get("chat_template")
        )
        if template is not None and not isinstance(template, str):
            return None  # named templates: transformers picks among them
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(tokenizer_file)), config, template)

    # -- the transformers tokenizer's interface, as far as the engine uses it ---------------

    def __len__(self) -> int:
        return self.backend_tokenizer.get_vocab_size(with_added_tokens=True)

    def _special_id(self, name: str) -> int | None:
        text = self.special_tokens.get(name)
        return None if text is None else self.convert_tokens_to_ids(text)

    @property
    def bos_token_id(self) -> int | None:
        """The id of the beginning-of-sequence token, if the model has one."""
        return self._special_id("bos_token")

    @property
    def eos_token_id(self) -> int | None:
        """The id of the end-of-sequence token, if the model has one."""
        return self._special_id("eos_token")

    @property
    def pad_token_id(self) -> int | None:
        """The id of the padding token, if the model has one."""
        return self._special_id("pad_token")

    def convert_tokens_to_ids(self, token: str) -> int | None:
        """The id of one token."""
        return self.backend_tokenizer.token_to_id(token)

    def __call__(
        self, text: str, add_special_tokens: bool = True, return_offsets_mapping: bool = False
    ) -> dict[str, list]:
        encoding = self.backend_tokenizer.encode(text, add_special_tokens=add_special_tokens)
        out: dict[str, list] = {"input_ids": encoding.ids}
        if return_offsets_mapping:
            out["offset_mapping"] = encoding.offsets
        return out

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        """Decode ids to text."""
        return self.backend_tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def apply_chat_template(
        self, messages: list[dict], tokenize: bool = False, add_generation_prompt: bool = True
    ) -> str | list[int]:
        """Render ``messages`` with the chat template as transformers does."""
        if self.chat_template is None:
            raise ValueError("this tokenizer has no chat template")
        if self._template is None:
            self._template = _compile(self.chat_template)
        text = self._template.render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            tools=None,
            documents=None,
            **self.special_tokens,
        )
        return self(text, add_special_tokens=False)["input_ids"] if tokenize else text


def _compile(template: str) -> Any:
    """The template in transformers' environment: sandboxed, trimmed blocks, loop controls,
    ``raise_exception``, ``strftime_now`` and a ``tojson`` that does not escape HTML."""
    import jinja2
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False) -> str:
        return json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)
