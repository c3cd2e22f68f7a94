"""The soft prompt: a learned (P, H) matrix, and its initialisers.

Making a prompt is kept apart from combining it with the input (see prepend.py).
Initialisers follow Lester et al. (2021) §2.1: uniform in [-0.5, 0.5], sampled from the
embeddings of the 5,000 most common tokens, or class labels (each label's embedding,
multi-token labels averaged, remaining positions filled with sampled vocabulary); plus
from a text and from a saved prompt (transfer).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from softprompt.errors import ConfigError

INITS = ("vocab", "uniform", "labels", "text", "file")
TOP_TOKENS = 5000


def _common_token_ids(tokenizer, count: int = TOP_TOKENS) -> torch.Tensor:
    """Ids of the `count` most common ordinary tokens.

    BPE and SentencePiece vocabularies are ordered by merge/frequency rank, so the
    lowest ids of the non-special tokens are the most frequent ones.
    """
    special = set(tokenizer.all_special_ids)
    ids = [i for i in range(len(tokenizer)) if i not in special]
    return torch.tensor(ids[:count])


def init_uniform(length: int, embeddings: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(length, embeddings.shape[1], generator=generator) - 0.5


def init_vocab(length: int, embeddings: torch.Tensor, tokenizer, generator: torch.Generator) -> torch.Tensor:
    pool = _common_token_ids(tokenizer)
    picks = pool[torch.randperm(len(pool), generator=generator)[:length]]
    if len(picks) < length:  # tiny vocabularies: sample with replacement
        picks = pool[torch.randint(len(pool), (length,), generator=generator)]
    return embeddings[picks].float()


def init_labels(
    length: int, embeddings: torch.Tensor, tokenizer, labels: Sequence[str], generator: torch.Generator
) -> torch.Tensor:
    prompt = init_vocab(length, embeddings, tokenizer, generator)
    for i, label in enumerate(labels[:length]):
        ids = tokenizer(" " + label.strip(), add_special_tokens=False)["input_ids"] or [tokenizer.unk_token_id]
        prompt[i] = embeddings[torch.tensor(ids)].float().mean(0)
    return prompt


def init_text(length: int, embeddings: torch.Tensor, tokenizer, text: str) -> torch.Tensor:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise ConfigError("--init-text: the text has no tokens")
    ids = (ids * (length // len(ids) + 1))[:length]  # repeat to fill, as PEFT does
    return embeddings[torch.tensor(ids)].float()


def make_prompt(
    length: int,
    init: str,
    embeddings: torch.Tensor,
    tokenizer,
    *,
    seed: int = 0,
    labels: Sequence[str] = (),
    text: str | None = None,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """A new (length, H) float32 prompt initialised by `init` (one of `INITS`); a fresh
    tensor that shares no storage with `embeddings` or `weight`.

    Args:
        embeddings: (V, H) input embedding matrix of the frozen model.
        labels: Label words, for init="labels".
        text: Text, for init="text".
        weight: (P, H) saved prompt, for init="file".
    """
    if length < 1:
        raise ConfigError(f"--prompt-length must be at least 1, got {length}")
    g = torch.Generator().manual_seed(seed)
    emb = embeddings.detach().cpu()
    if init == "uniform":
        w = init_uniform(length, emb, g)
    elif init == "vocab":
        w = init_vocab(length, emb, tokenizer, g)
    elif init == "labels":
        if not labels:
            raise ConfigError("--init labels needs a classification task with label words")
        w = init_labels(length, emb, tokenizer, labels, g)
    elif init == "text":
        if not text:
            raise ConfigError("--init text needs --init-text")
        w = init_text(length, emb, tokenizer, text)
    elif init == "file":
        if weight is None:
            raise ConfigError("--init file needs --init-from PROMPT_DIR")
        if weight.shape[1] != emb.shape[1]:
            raise ConfigError(f"--init-from: prompt width {weight.shape[1]} != model width {emb.shape[1]}")
        if weight.shape[0] >= length:
            w = weight[:length]
        else:
            w = torch.cat([weight, init_vocab(length - weight.shape[0], emb, tokenizer, g)])
    else:
        raise ConfigError(f"--init {init!r}: expected one of {', '.join(INITS)}")
    return w.detach().to(torch.float32).clone()
