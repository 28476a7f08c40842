"""Train ``tiny-chat``, the built-in model that answers in simple English, without a download.

The corpus is ``scripts/chat_corpus.txt`` (questions and answers written for the purpose,
every question of a topic paired with every answer of it) and the prose paragraphs of the
Python reference that the standard library ships (``pydoc_data.topics``). Each pair is
rendered in the chat template (``<|im_start|>user ...``, as the OpenAI route renders a
conversation), in the ``User: ... / Assistant: ...`` form the chat UI and ``streamhost chat``
send, and as a bare question and answer (a raw TGI or LMI request), each ending with
``<|im_end|>`` so that generation stops after the answer.

The model is a 4-layer Llama with tied embeddings and a byte-level BPE tokenizer trained on
the same corpus, saved as an ordinary Hugging Face folder in float16 (the loader casts it to
float32 on the CPU). Everything is seeded and runs on one CPU thread, so the same command on
the same Python (3.11: the reference text is the interpreter's own), torch and tokenizers
versions rebuilds the shipped folder. The shipped weights came from (about 40 minutes):

    nice -n 19 .venv/bin/python scripts/train_chat_model.py \\
        --out src/streamhost/engine/data/tiny-chat

``--steps 100 --out /tmp/trial`` makes a quick trial run of the same recipe.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

SEED = 20240611
CORPUS = Path(__file__).with_name("chat_corpus.txt")
VOCAB_SIZE = 3072
HIDDEN_SIZE = 256
INTERMEDIATE_SIZE = 688
NUM_LAYERS = 4
NUM_HEADS = 4
# Trained on 256-token windows; the config allows longer prompts (as tiny does) so the UI's
# 400-token answers fit, though text far past the trained window reads worse.
SEQ_LEN = 256
CONTEXT_WINDOW = 4096
BATCH_SIZE = 8
STEPS = 800
PEAK_LR = 2e-3
WARMUP_STEPS = 30
FINAL_LR_FRACTION = 0.1
WEIGHT_DECAY = 0.1
# Share of the training tokens that are reference prose rather than conversations.
DOC_SHARE = 0.25
# Multi-turn conversations, as a share of the single-turn ones.
MULTI_TURN_SHARE = 0.3
PROMPTS = ("what is SageMaker inference?", "provide the steps to make a pizza", "what is life?")


@dataclass
class Topic:
    """Questions and the answers that fit every one of them."""

    name: str
    questions: list[str]
    answers: list[str]


def parse_topics(text: str) -> list[Topic]:
    """The ``[topic]`` / ``Q:`` / ``A:`` blocks of the corpus file."""
    topics: list[Topic] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            topics.append(Topic(line[1:-1], [], []))
        elif line.startswith("Q: "):
            topics[-1].questions.append(line[3:])
        elif line.startswith("A: "):
            topics[-1].answers.append(line[3:].replace("\\n", "\n"))
        else:
            raise ValueError(f"{CORPUS.name}: cannot read line {line!r}")
    return topics


_WORD = re.compile(r"[A-Za-z]+[.,;:]?$")


def _is_prose(paragraph: str) -> bool:
    words = paragraph.split()
    if len(words) < 12 or not paragraph.endswith("."):
        return False
    return sum(bool(_WORD.match(w)) for w in words) / len(words) >= 0.85


def reference_prose() -> list[tuple[str, list[str]]]:
    """``(title, prose paragraphs)`` of each topic of the Python reference (no code, no
    grammar), in the stdlib's own order."""
    from pydoc_data.topics import topics

    out = []
    for key in sorted(topics):
        blocks = topics[key].split("\n\n")
        title = blocks[0].split("\n")[0].replace('"', "").strip()
        paragraphs = []
        for block in blocks[1:]:
            if block.startswith((" ", "*", "=", "-")) or "\n " in block:
                continue  # code, grammar, lists and headings
            paragraph = " ".join(block.split())
            if _is_prose(paragraph):
                paragraphs.append(paragraph)
        if paragraphs:
            out.append((title, paragraphs))
    return out


def corpus_texts() -> list[str]:
    """Every piece of text the model learns from (the tokenizer is trained on these)."""
    texts = []
    for topic in parse_topics(CORPUS.read_text("utf-8")):
        texts += topic.questions + topic.answers
    for title, paragraphs in reference_prose():
        texts += [title, *paragraphs]
    return texts


def build_tokenizer(texts: list[str]):
    """tiny's byte-level BPE tokenizer (its special tokens and chat template), trained on
    `texts` with this model's vocabulary size."""
    from streamhost.engine.tiny import build_tokenizer as train_tokenizer

    lines = [line for text in texts for line in text.splitlines()]
    return train_tokenizer(lines, vocab_size=VOCAB_SIZE, context_window=CONTEXT_WINDOW)


def _vary(question: str, rng: random.Random) -> str:
    """The question as people type it: capitalised or not, with or without its mark."""
    if rng.random() < 0.3:
        question = question[0].upper() + question[1:]
    if question.endswith("?") and rng.random() < 0.15:
        question = question[:-1]
    return question


def render_ui(turns: list[tuple[str, str]]) -> str:
    """A conversation as the chat UI sends it (``streamhost.endpoints.conversation``),
    answered."""
    return "".join(f"User: {q}\nAssistant: {a}\n" for q, a in turns).removesuffix("\n")


def conversations(topics: list[Topic], rng: random.Random) -> list[list[tuple[str, str]]]:
    """Every question with every answer of its topic, plus some multi-turn mixes."""
    singles = [
        [(_vary(q, rng), a)] for topic in topics for q in topic.questions for a in topic.answers
    ]
    multi = []
    for _ in range(int(len(singles) * MULTI_TURN_SHARE)):
        turns = []
        for topic in rng.sample(topics, rng.choice((2, 2, 3))):
            turns.append((_vary(rng.choice(topic.questions), rng), rng.choice(topic.answers)))
        multi.append(turns)
    return singles + multi


def encode_samples(tokenizer, topics: list[Topic], rng: random.Random) -> list[list[int]]:
    """Token ids of every training sample: each conversation in the chat template and in
    the UI's form (a single question also bare, as a raw request sends it), then prose."""
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    samples = []
    for turns in conversations(topics, rng):
        messages = []
        for q, a in turns:
            messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        chat = tokenizer.apply_chat_template(messages, tokenize=False)
        samples.append(tokenizer.encode(chat, add_special_tokens=False))
        samples.append([*tokenizer.encode(render_ui(turns), add_special_tokens=False), eos])
        if len(turns) == 1:  # a bare question, as in `invoke` or a raw TGI request
            bare = f"{turns[0][0]}\n{turns[0][1]}"
            samples.append([*tokenizer.encode(bare, add_special_tokens=False), eos])
    chat_tokens = sum(map(len, samples))
    docs = []
    for title, paragraphs in reference_prose():
        docs.append(tokenizer.encode(f"User: tell me about {title}\nAssistant: {paragraphs[0]}"))
        docs[-1].append(eos)
        docs += [tokenizer.encode(p) for p in paragraphs[1:]]
    # Reference prose up to its share of the tokens, the same paragraphs every run.
    budget = chat_tokens * DOC_SHARE / (1 - DOC_SHARE)
    rng.shuffle(docs)
    while docs and budget > 0:
        budget -= len(docs[-1])
        samples.append(docs.pop())
    return samples


def batches(samples: list[list[int]], separator: int, rng: random.Random):
    """Endless ``(BATCH_SIZE, SEQ_LEN + 1)`` batches: the samples shuffled each epoch and
    packed end to end, split by ``<|endoftext|>``."""
    import torch

    rows: list[list[int]] = []
    stream: list[int] = []
    while True:
        order = list(range(len(samples)))
        rng.shuffle(order)
        for index in order:
            stream += samples[index] + [separator]
            while len(stream) > SEQ_LEN:
                rows.append(stream[: SEQ_LEN + 1])
                stream = stream[SEQ_LEN:]
                if len(rows) == BATCH_SIZE:
                    yield torch.tensor(rows)
                    rows = []


def learning_rate(step: int, steps: int, peak: float = PEAK_LR) -> float:
    """Linear warm-up, then cosine decay to ``FINAL_LR_FRACTION`` of the peak."""
    if step < WARMUP_STEPS:
        return peak * (step + 1) / WARMUP_STEPS
    progress = (step - WARMUP_STEPS) / max(1, steps - WARMUP_STEPS)
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return peak * (FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * cosine)


def new_model(tokenizer):
    """The untrained model, initialised from the seed."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    eos_ids = [tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN_SIZE,
        intermediate_size=INTERMEDIATE_SIZE,
        num_hidden_layers=NUM_LAYERS,
        num_attention_heads=NUM_HEADS,
        num_key_value_heads=NUM_HEADS,
        max_position_embeddings=CONTEXT_WINDOW,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eos_ids,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(SEED)
    return LlamaForCausalLM(config)


def answer(model, tokenizer, question: str, max_new_tokens: int = 80) -> str:
    """The greedy answer to ``question`` in the chat UI's form (for the log)."""
    import torch

    ids = tokenizer.encode(f"User: {question}\nAssistant:", return_tensors="pt")
    model.eval()
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False)
    model.train()
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()


def train(
    model, tokenizer, samples: list[list[int]], steps: int, peak: float, rng: random.Random
) -> float:
    """AdamW with warm-up and cosine decay; returns the mean loss of the last 50 steps."""
    import torch

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    rest = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": rest, "weight_decay": 0.0}],
        lr=peak,
        betas=(0.9, 0.95),
    )
    separator = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    recent: list[float] = []
    started = time.monotonic()
    model.train()
    for step, batch in zip(range(steps), batches(samples, separator, rng), strict=False):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, steps, peak)
        logits = model(input_ids=batch[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1)
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        recent = [*recent, loss.item()][-50:]
        if step % 25 == 0 or step == steps - 1:
            elapsed = time.monotonic() - started
            print(
                f"step {step:5d}  loss {sum(recent) / len(recent):.3f}  "
                f"lr {learning_rate(step, steps, peak):.2e}  {elapsed / 60:.1f} min",
                flush=True,
            )
        if step % 300 == 299:
            print("  what is life? ->", answer(model, tokenizer, "what is life?", 40), flush=True)
    return sum(recent) / len(recent)


def save(model, tokenizer, folder: Path, summary: dict) -> None:
    """The model as a Hugging Face folder in float16, with a README that says where it
    came from."""
    import torch
    from transformers import GenerationConfig

    model.generation_config = GenerationConfig(
        bos_token_id=model.config.bos_token_id,
        eos_token_id=model.config.eos_token_id,
        pad_token_id=model.config.pad_token_id,
        do_sample=False,
    )
    model.config.dtype = "float16"
    folder.mkdir(parents=True, exist_ok=True)
    model.to(torch.float16).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    (folder / "README.md").write_text(
        "# streamhost tiny-chat\n\n"
        f"A {NUM_LAYERS}-layer Llama ({summary['parameters'] / 1e6:.1f} M parameters) trained "
        "by `scripts/train_chat_model.py` on questions and answers written in simple English "
        "and on prose of the Python reference. Its answers read as language but are simple "
        "and often wrong: it exists so that a first run of streamhost needs no download.\n\n"
        f"Training: {summary['steps']} steps of {BATCH_SIZE} x {SEQ_LEN} tokens on one CPU "
        f"thread, final loss {summary['loss']:.3f}.\n"
    )


def main(argv: list[str] | None = None) -> int:
    """Build the corpus and tokenizer, train, save; print sample answers."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write the model to")
    parser.add_argument("--steps", type=int, default=STEPS, help=f"training steps ({STEPS})")
    parser.add_argument("--lr", type=float, default=PEAK_LR, help=f"peak learning rate ({PEAK_LR})")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)  # one thread: the same arithmetic in the same order every run
    rng = random.Random(SEED)
    tokenizer = build_tokenizer(corpus_texts())
    samples = encode_samples(tokenizer, parse_topics(CORPUS.read_text("utf-8")), rng)
    model = new_model(tokenizer)
    parameters = sum(p.numel() for p in model.parameters())
    print(
        f"{len(tokenizer)} tokens in the vocabulary, {len(samples)} samples of "
        f"{sum(map(len, samples))} tokens, {parameters} parameters",
        flush=True,
    )
    started = time.monotonic()
    loss = train(model, tokenizer, samples, args.steps, args.lr, rng)
    minutes = (time.monotonic() - started) / 60
    for prompt in PROMPTS:
        print(f"User: {prompt}\nAssistant: {answer(model, tokenizer, prompt, 120)}\n")
    summary = {"parameters": parameters, "steps": args.steps, "minutes": minutes, "loss": loss}
    save(model, tokenizer, args.out, summary)
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    sys.exit(main())
