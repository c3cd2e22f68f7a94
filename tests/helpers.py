"""Shared test helpers: tiny randomly initialised models built in the test, a small
word-level tokenizer, tiny in-memory tasks and data files, and an in-process CLI runner.
Tests import them from here (`from helpers import tiny_llama`); conftest.py holds fixtures."""

from __future__ import annotations

import csv
import io
import json
import random
import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

from softprompt.models.identity import ModelIdentity, fingerprint_embeddings
from softprompt.models.loading import LoadedModel
from softprompt.tasks.base import Example, Task

WORDS = (
    ["<pad>", "</s>", "<unk>"]
    + list("abcdefghijklmnopqrstuvwxyz0123456789.,:'!?")
    + [
        "positive",
        "negative",
        "great",
        "awful",
        "movie",
        "sentence",
        "sst2",
        "yes",
        "no",
        "maybe",
    ]
)


def make_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer (whole words from WORDS, else characters) over a tiny vocabulary."""
    vocab = {w: i for i, w in enumerate(WORDS)}
    tok = Tokenizer(
        models.WordPiece(vocab=vocab, unk_token="<unk>", continuing_subword_prefix="", max_input_chars_per_word=100)
    )
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    from tokenizers import decoders

    tok.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def _wrap(model, tokenizer, name) -> LoadedModel:
    model.eval().requires_grad_(False)
    emb = model.get_input_embeddings().weight
    identity = ModelIdentity(name, fingerprint_embeddings(emb), emb.shape[1], type(model).__name__)
    return LoadedModel(model=model, tokenizer=tokenizer, identity=identity, dtype=emb.dtype)


def tiny_llama(
    seed: int = 0,
    dtype=torch.float32,
    hidden_size: int = 32,
    tie_word_embeddings: bool = True,
    initializer_range: float = 0.02,
    layers: int = 2,
    heads: int = 4,
    mlp_ratio: int = 2,
) -> LoadedModel:
    """A random Llama over the tiny vocabulary (2 layers by default). `initializer_range` 0.2 with
    untied embeddings gives logits a range wide enough that a 4-token prompt can learn the toy
    task in a few dozen steps; benchmarks build larger ones with `layers`, `heads`, `mlp_ratio`."""
    torch.manual_seed(seed)
    tok = make_tokenizer()
    cfg = LlamaConfig(
        vocab_size=len(WORDS),
        hidden_size=hidden_size,
        intermediate_size=mlp_ratio * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads // 2,
        max_position_embeddings=256,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=1,
        tie_word_embeddings=tie_word_embeddings,
        initializer_range=initializer_range,
    )
    return _wrap(LlamaForCausalLM(cfg).to(dtype), tok, f"tiny-llama-{seed}")


def tiny_llama_folder(path: Path, **kwargs) -> Path:
    """`tiny_llama(**kwargs)` saved as a Hugging Face folder (weights and tokenizer) at `path`,
    for code that loads a model from disk (`--model PATH`, `load_model`)."""
    lm = tiny_llama(**kwargs)
    lm.model.save_pretrained(path)
    lm.tokenizer.save_pretrained(path)
    return path


def learnable_llama(seed: int = 0, dtype=torch.float32) -> LoadedModel:
    """A tiny Llama on which a prompt can learn the toy task (see `tiny_llama`)."""
    return tiny_llama(seed, dtype, initializer_range=0.2, tie_word_embeddings=False)


def tiny_t5(seed: int = 0) -> LoadedModel:
    torch.manual_seed(seed)
    tok = make_tokenizer()
    cfg = T5Config(
        vocab_size=len(WORDS),
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return _wrap(T5ForConditionalGeneration(cfg), tok, f"tiny-t5-{seed}")


# -- tiny sentiment data ------------------------------------------------------------------

TOY_VERBALIZER = {"neg": "negative", "pos": "positive"}
_FILLERS = ["a", "the movie", "this movie", "movie", "so", "b c", "it is", "d", "really"]


def toy_rows(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """`n` (sentence, label) pairs, balanced: sentences ending in "great" are pos, in "awful" neg."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "pos" if i % 2 == 0 else "neg"
        word = "great" if label == "pos" else "awful"
        rows.append((f"{rng.choice(_FILLERS)} {word}", label))
    return rows


def toy_examples(n: int, seed: int = 0) -> list[Example]:
    return [Example({"sentence": s}, label, source=f"toy:{i + 1}") for i, (s, label) in enumerate(toy_rows(n, seed))]


def toy_task(n_train: int = 40, n_dev: int = 16, name: str = "toy") -> Task:
    """A classification Task over in-memory synthetic examples (train and dev differ)."""
    splits = {"train": toy_examples(n_train, seed=0), "dev": toy_examples(n_dev, seed=1)}
    return Task(
        name=name,
        template="sst2 sentence: {sentence}",
        verbalizer=dict(TOY_VERBALIZER),
        metrics=("accuracy",),
        loader=lambda split: list(splits[split]),
        description="synthetic great/awful",
    )


def write_csv(path: Path, rows: list[tuple[str, str]], header=("sentence", "label"), delimiter: str = ",") -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def run_cli(capsys, *argv, stdin: str | None = None) -> tuple[int, str, str]:
    """Run the `softprompt` command in-process: exit code, stdout, stderr."""
    from softprompt import cli

    if stdin is not None:
        sys.stdin = io.StringIO(stdin)
    try:
        code = cli.main([str(a) for a in argv])
    finally:
        sys.stdin = sys.__stdin__
    out, err = capsys.readouterr()
    return code, out, err


def cli_loads(monkeypatch, lm: LoadedModel) -> LoadedModel:
    """Every `softprompt` command run in this test loads `lm` instead of the named model."""
    from softprompt import cli

    monkeypatch.setattr(cli.runtime, "load_model", lambda name, precision: lm)
    return lm


# -- prompt libraries for the server tests ---------------------------------------------------

TOY = {
    "name": "toy",
    "template": "sst2 sentence: {sentence}",
    "verbalizer": {"neg": "negative", "pos": "positive"},
    "metrics": ["accuracy"],
}
YN = {
    "name": "yn",
    "template": "question: {q}",
    "verbalizer": {"yes": "yes", "no": "no", "maybe": "maybe sentence"},
    "metrics": ["accuracy"],
}
ECHO = {"name": "echo", "template": "{text} :", "verbalizer": None, "metrics": ["squad_em"]}


def prompt_tensor(hidden: int, length: int, seed: int) -> torch.Tensor:
    return torch.randn(length, hidden, generator=torch.Generator().manual_seed(seed)) * 0.3


def save_library_prompt(
    lib: Path, name: str, lm: LoadedModel, task: dict, length: int, seed: int, accuracy: float | None = None
) -> None:
    """A random prompt of `length` for `lm` saved as folder `lib/name`, recording `task` (metadata)."""
    from softprompt.io import SavedPrompt, save_prompt

    metrics = {"accuracy": accuracy} if accuracy is not None else {}
    save_prompt(
        lib / name, SavedPrompt(prompt_tensor(lm.hidden_size, length, seed), lm.identity, task, metrics=metrics)
    )


def with_bos(lm: LoadedModel) -> LoadedModel:
    """`lm` with a tokenizer that starts every text with a BOS of its own accord, as Gemma's
    does (the tiny vocabulary's "</s>" stands in for <bos>)."""
    import dataclasses

    from tokenizers.processors import TemplateProcessing

    inner = make_tokenizer().backend_tokenizer
    bos = inner.token_to_id("</s>")
    inner.post_processor = TemplateProcessing(single="</s> $A", pair="</s> $A $B", special_tokens=[("</s>", bos)])
    tok = PreTrainedTokenizerFast(tokenizer_object=inner, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    return dataclasses.replace(lm, tokenizer=tok)
