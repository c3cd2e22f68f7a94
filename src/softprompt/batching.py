"""Tokenise examples and collate them into dynamically padded batches.

Decoder-only rows are laid out [input][target][pad] and the prompt goes in front
(prepend.py), so every row's prompt sits at the same positions: that is what lets the
prompt's key/value states be computed once and shared. Encoder-decoder rows keep input
and target apart (the target feeds the decoder).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from softprompt.config import TrainConfig, default_of
from softprompt.prepend import IGNORE
from softprompt.tasks.base import Example, Task
from softprompt.truncate import cut_ids, fit

MAX_INPUT_TOKENS = default_of(TrainConfig, "max_input_tokens")
TRUNCATION = default_of(TrainConfig, "truncation")


@dataclass(frozen=True)
class Encoded:
    """Token ids of one example: model input and the target it should produce; for a
    ranked example also its candidates' ids and the gold candidate's index (-1: none)."""

    input_ids: list[int]
    target_ids: list[int]
    choices: tuple[list[int], ...] | None = None
    gold: int = -1


@dataclass
class Batch:
    """A padded batch.

    Decoder-only: input_ids (B, T) hold input then target, labels (B, T) hold the
    target ids at target positions and IGNORE elsewhere.
    Encoder-decoder: input_ids (B, T) encoder input, labels (B, L) decoder targets.
    For the rank loss: inputs (unpadded input ids), choices (candidate ids) and gold (B,)
    index of the gold candidate, -1 for rows that are not ranked.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    size: int
    inputs: list[list[int]] | None = None
    choices: list[tuple[list[int], ...] | None] | None = None
    gold: torch.Tensor | None = None

    def loss_counts(self) -> "LossCounts":
        """The normalisers of the training loss over this batch (see `LossCounts`)."""
        targets = (self.labels != IGNORE).sum(1).tolist()  # (B,) target tokens per row
        gold = self.gold.tolist() if self.gold is not None else [-1] * self.size
        ranked = [i for i, g in enumerate(gold) if g >= 0]
        rest = [i for i, g in enumerate(gold) if g < 0]
        return LossCounts(
            rows=self.size,
            ranked=len(ranked),
            tokens=sum(targets),
            gold_tokens=sum(len(self.choices[i][gold[i]]) for i in ranked),
            rest_rows=len(rest),
            rest_tokens=sum(targets[i] for i in rest),
        )

    def to(self, device: torch.device) -> "Batch":
        gold = self.gold.to(device) if self.gold is not None else None
        return Batch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.labels.to(device),
            self.size,
            self.inputs,
            self.choices,
            gold,
        )

    def select(self, rows: Sequence[int]) -> "Batch":
        """The batch of rows `rows` (padding kept)."""
        index = torch.tensor(rows, device=self.input_ids.device)
        pick = lambda xs: [xs[i] for i in rows] if xs is not None else None
        return Batch(
            self.input_ids[index],
            self.attention_mask[index],
            self.labels[index],
            len(rows),
            pick(self.inputs),
            pick(self.choices),
            self.gold[index] if self.gold is not None else None,
        )


@dataclass(frozen=True)
class LossCounts:
    """Rows and target tokens of a batch: the denominators of the training loss's means.
    Data-parallel workers each hold part of a batch and weight their part by the counts of
    the whole (`PromptedLM.loss(..., whole=)`), so the parts' losses add up to the whole's.

    Attributes:
        rows: Rows. ranked: Rows scored by rank classification (a gold candidate).
        tokens: Target tokens of every row. gold_tokens: Gold-candidate tokens of the ranked rows.
        rest_rows, rest_tokens: Rows that are not ranked (generation), and their target tokens.
    """

    rows: int
    ranked: int
    tokens: int
    gold_tokens: int
    rest_rows: int
    rest_tokens: int


def loss_counts(rows: Sequence[Encoded]) -> LossCounts:
    """`Batch.loss_counts` of the batch these encoded rows would collate into, without collating."""
    ranked = [r for r in rows if r.choices is not None and r.gold >= 0]
    rest = [r for r in rows if not (r.choices is not None and r.gold >= 0)]
    return LossCounts(
        rows=len(rows),
        ranked=len(ranked),
        tokens=sum(len(r.target_ids) for r in rows),
        gold_tokens=sum(len(r.choices[r.gold]) for r in ranked),
        rest_rows=len(rest),
        rest_tokens=sum(len(r.target_ids) for r in rest),
    )


def leading_special_ids(tokenizer) -> list[int]:
    """The ids a tokenizer puts before every text of its own accord (Gemma: <bos>; SmolLM2
    and Qwen: none). Inputs are encoded without them; `PromptedLM.with_lead` puts their
    embeddings in front of the soft prompt instead, so the model sees <bos> first."""
    probe = "a"
    plain = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe, add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return list(full[:start])
    return []


class Encoder:
    """Turns examples of a task into token ids for one model's tokenizer.

    Args:
        tokenizer: The frozen model's tokenizer.
        encoder_decoder: Whether the model is encoder-decoder (T5).
        max_input_tokens: The longest input in tokens.
        truncation: How a longer input is shortened (head, tail, head+tail): only its
            example's fields are cut, never the template's text (truncate.py).
    """

    def __init__(
        self,
        tokenizer,
        encoder_decoder: bool,
        max_input_tokens: int = MAX_INPUT_TOKENS,
        truncation: str = TRUNCATION,
    ) -> None:
        self.tokenizer = tokenizer
        self.encoder_decoder = encoder_decoder
        self.max_input_tokens = max_input_tokens
        self.truncation = truncation
        self._label_cache: dict[str, list[int]] = {}

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=self.encoder_decoder)["input_ids"]

    def _offsets(self, text: str) -> list[tuple[int, int]]:
        """Character spans of `text`'s tokens on their own (no special tokens)."""
        if getattr(self.tokenizer, "is_fast", False):
            spans = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
            return [(a, b) for a, b in spans if b > a]
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]  # slow tokenizers: decoded prefixes
        ends = [len(self.tokenizer.decode(ids[: i + 1])) for i in range(len(ids))]
        return [(start, end) for start, end in zip([0, *ends[:-1]], ends)]

    def input_ids(self, text: str) -> list[int]:
        """Ids of a whole input text, cut to `max_input_tokens` by the truncation strategy."""
        return cut_ids(self._ids(text), self.max_input_tokens, self.truncation)

    def task_input_ids(self, task: Task, example: Example) -> list[int]:
        """Ids of `example` formatted by `task`'s template, at most `max_input_tokens`: a long
        example's fields are shortened, the template's text is kept."""
        text = task.format(example)  # checks the fields
        ids = self._ids(text)
        if len(ids) <= self.max_input_tokens:
            return ids
        names = [n for n in dict.fromkeys(task.template_fields) if n in example.fields]
        fields = {n: str(v) for n, v in example.fields.items()}
        return fit(task.template, fields, names, self.max_input_tokens, self.truncation, self._ids, self._offsets)

    def target_ids(self, text: str, eos: bool = False) -> list[int]:
        """Ids of a target/label continuation. Decoder-only targets get a leading space,
        so they tokenise as a word following the input."""
        key = f"{eos}\0{text}"
        if key not in self._label_cache:
            if self.encoder_decoder:
                ids = self.tokenizer(text, add_special_tokens=True)["input_ids"]
            else:
                ids = self.tokenizer(" " + text.strip(), add_special_tokens=False)["input_ids"]
                if eos and self.tokenizer.eos_token_id is not None:
                    ids = ids + [self.tokenizer.eos_token_id]
            self._label_cache[key] = ids
        return self._label_cache[key]

    def encode(self, task: Task, example: Example) -> Encoded:
        generative = not task.is_classification and example.choices is None
        target = task.target_text(example)
        input_ids, target_ids = self.task_input_ids(task, example), self.target_ids(target, eos=generative)
        if generative:
            return Encoded(input_ids, target_ids)
        words = task.candidates(example)
        gold = words.index(target) if target in words else -1  # e.g. a ReCoRD answer spelt unlike its entity
        return Encoded(input_ids, target_ids, tuple(self.target_ids(w) for w in words), gold)

    def collate(self, rows: Sequence[Encoded]) -> Batch:
        pad = self.tokenizer.pad_token_id
        ranking = {
            "inputs": [r.input_ids for r in rows],
            "choices": [r.choices for r in rows],
            "gold": torch.tensor([r.gold for r in rows], dtype=torch.long),
        }
        if self.encoder_decoder:
            ids, mask = pad_right([r.input_ids for r in rows], pad)
            labels, _ = pad_right([r.target_ids for r in rows], IGNORE)
            return Batch(ids, mask, labels, len(rows), **ranking)
        seqs = [r.input_ids + r.target_ids for r in rows]
        ids, mask = pad_right(seqs, pad)
        labels = torch.full_like(ids, IGNORE)
        for i, r in enumerate(rows):
            start = len(r.input_ids)
            labels[i, start : start + len(r.target_ids)] = torch.tensor(r.target_ids)
        return Batch(ids, mask, labels, len(rows), **ranking)


def pad_right(seqs: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists to the longest: (B, T) ids and (B, T) attention mask."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def bucketed_batches(
    lengths: Sequence[int], batch_size: int, rng: random.Random, bucket_batches: int = 32
) -> Iterator[list[int]]:
    """An endless stream of index batches with little padding.

    Shuffles the data, cuts it into pools of `bucket_batches` batches, sorts each pool
    by length, slices it into batches and shuffles the batch order, so the stream stays
    random while rows of a batch have similar lengths.
    """
    n = len(lengths)
    while True:
        order = list(range(n))
        rng.shuffle(order)
        pool = batch_size * bucket_batches
        for start in range(0, n, pool):
            chunk = sorted(order[start : start + pool], key=lambda i: lengths[i])
            batches = [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
            rng.shuffle(batches)
            for b in batches:
                if len(b) == batch_size or n < batch_size:
                    yield b


def sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Every index once, in batches of similar length (for evaluation)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def mixture_batches(
    lengths: Sequence[Sequence[int]], cap: int | None, batch_size: int, rng: random.Random, bucket_batches: int = 32
) -> Iterator[list[int]]:
    """An endless stream of batches of indices into the concatenation of the tasks' examples.

    Args:
        lengths: Per task, the token length of each of its examples (for bucketing).
        cap: K; None or a cap no task reaches gives plain concatenation (every example once
            per epoch), exactly `bucketed_batches` over all examples.
    """
    offsets = [sum(len(l) for l in lengths[:i]) for i in range(len(lengths))]
    flat = [n for task_lengths in lengths for n in task_lengths]
    if cap is None or all(len(l) <= cap for l in lengths):
        yield from bucketed_batches(flat, batch_size, rng, bucket_batches)
        return
    while True:  # one round: min(n_i, K) examples of each task
        chosen = [
            off + j
            for off, task_lengths in zip(offsets, lengths)
            for j in rng.sample(range(len(task_lengths)), min(cap, len(task_lengths)))
        ]
        rng.shuffle(chosen)
        pool = batch_size * bucket_batches
        for start in range(0, len(chosen), pool):
            chunk = sorted(chosen[start : start + pool], key=lambda i: flat[i])
            batches = [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
            rng.shuffle(batches)
            yield from (b for b in batches if len(b) == batch_size or len(chosen) < batch_size)
