"""The plain tokenizer gives transformers' results for the folders it loads, and leaves every
other tokenizer to transformers."""

from __future__ import annotations

import json

import pytest

from streamhost.engine.tiny import built_in_path
from streamhost.engine.tokenizer import PlainTokenizer, load_tokenizer

TEXTS = [
    "",
    "Hello, world!",
    "  leading and trailing spaces  ",
    "Streaming tokens: caf\u00e9, na\u00efve, \u65e5\u672c\u8a9e, emoji \U0001f600.",
    "<|im_start|>user\nhi<|im_end|>\n<|endoftext|>",
    "tabs\tand\nnew\n\nlines",
]
CONVERSATIONS = [
    [{"role": "user", "content": "What is streaming?"}],
    [
        {"role": "system", "content": "You are brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Tell me about Python."},
    ],
]


@pytest.fixture(scope="module", params=["tiny", "tiny-chat"])
def pair(request, tiny_dir):
    from transformers import AutoTokenizer

    folder = built_in_path(request.param)
    plain = load_tokenizer(folder)
    assert isinstance(plain, PlainTokenizer)
    return plain, AutoTokenizer.from_pretrained(folder)


def test_encodings_and_offsets_are_transformers_own(pair):
    plain, reference = pair
    for text in TEXTS:
        for special in (True, False):
            ours = plain(text, add_special_tokens=special, return_offsets_mapping=True)
            theirs = reference(text, add_special_tokens=special, return_offsets_mapping=True)
            assert ours["input_ids"] == theirs["input_ids"]
            assert [tuple(o) for o in ours["offset_mapping"]] == [
                tuple(o) for o in theirs["offset_mapping"]
            ]


def test_decoding_and_special_tokens_are_transformers_own(pair):
    plain, reference = pair
    for text in TEXTS:
        ids = reference(text)["input_ids"]
        for skip in (True, False):
            assert plain.decode(ids, skip_special_tokens=skip) == reference.decode(
                ids, skip_special_tokens=skip
            )
    assert plain.all_special_ids == reference.all_special_ids
    assert (plain.bos_token_id, plain.eos_token_id, plain.pad_token_id) == (
        reference.bos_token_id,
        reference.eos_token_id,
        reference.pad_token_id,
    )
    assert len(plain) == len(reference)
    assert plain.model_max_length == reference.model_max_length


def test_chat_template_renders_as_transformers_renders_it(pair):
    plain, reference = pair
    for messages in CONVERSATIONS:
        for prompt in (True, False):
            assert plain.apply_chat_template(
                messages, add_generation_prompt=prompt
            ) == reference.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=prompt
            )


@pytest.mark.parametrize(
    "change",
    [
        {"tokenizer_class": "LlamaTokenizer"},
        {"add_bos_token": True},
        {"clean_up_tokenization_spaces": True},
        {"auto_map": {"AutoTokenizer": ["x.Tok", None]}},
    ],
)
def test_tokenizers_that_need_more_than_the_file_go_to_transformers(tmp_path, change):
    folder = built_in_path("tiny-chat")
    for name in ("tokenizer.json", "chat_template.jinja"):
        (tmp_path / name).write_bytes((folder / name).read_bytes())
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**config, **change}))
    assert PlainTokenizer.from_folder(tmp_path) is None
