"""Evaluate a prompt on a task: rank classification or greedy generation, then metrics.

Rank classification scores every candidate label by the log-likelihood of its full
token sequence and picks the best, so a prediction is always one of the labels.
Ensembles of several prompts are in ensemble.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from softprompt.batching import MAX_INPUT_TOKENS, TRUNCATION, Encoder, sorted_batches
from softprompt.distributed import SINGLE, Context, all_gather_object, shard
from softprompt.scoring import PromptedLM
from softprompt.tasks.base import Example, Task
from softprompt.tasks.metrics import compute_metrics


@dataclass
class Evaluation:
    """Metrics and per-example outputs of one evaluation."""

    task: str
    metrics: dict[str, float]
    predictions: list[str]
    scores: list[list[float]] | None
    examples: int


def predict(
    plm: PromptedLM,
    prompt: torch.Tensor,
    task: Task,
    examples: Sequence[Example],
    batch_size: int = 32,
    length_normalize: bool = False,
    progress: bool = False,
    max_input_tokens: int = MAX_INPUT_TOKENS,
    truncation: str = TRUNCATION,
) -> tuple[list[str], list[list[float]] | None]:
    """Predictions for `examples`: class labels (or chosen candidates) for tasks with
    candidates, generated text otherwise; plus per-candidate scores when ranking. Inputs
    longer than `max_input_tokens` are shortened by `truncation` (batching.Encoder)."""
    enc = Encoder(plm.lm.tokenizer, plm.lm.is_encoder_decoder, max_input_tokens, truncation)
    inputs = [enc.task_input_ids(task, e) for e in examples]
    ranking = task.is_classification or any(e.choices is not None for e in examples)
    preds: list[str] = [""] * len(examples)
    scores: list[list[float]] = [[] for _ in examples]
    prepared = plm.prepare(prompt.detach().to(plm.lm.device))  # once for all batches
    bar = tqdm(total=len(examples), desc=f"eval {task.name}", unit="ex", disable=not progress, leave=False)
    for idx in sorted_batches([len(i) for i in inputs], batch_size):
        batch_inputs = [inputs[i] for i in idx]
        if ranking:
            words = [task.candidates(examples[i]) for i in idx]
            cands = [[enc.target_ids(w) for w in ws] for ws in words]
            result = plm.score(prepared, batch_inputs, cands)
            for i, ws, per in zip(idx, words, result):
                best, values = rank(per, length_normalize)
                scores[i] = values
                preds[i] = task.labels[best] if examples[i].choices is None else ws[best]
        else:
            outs = plm.generate(prepared, batch_inputs, task.max_new_tokens)
            for i, ids in zip(idx, outs):
                preds[i] = plm.lm.tokenizer.decode(ids, skip_special_tokens=True).strip()
        bar.update(len(idx))
    bar.close()
    return preds, (scores if ranking else None)


def input_cut(training: dict | None) -> dict:
    """The input length and truncation a saved prompt was trained with (`SavedPrompt.training`),
    as keyword arguments of `predict`/`evaluate`; the defaults where it records none."""
    training = training or {}
    return {
        "max_input_tokens": int(training.get("max_input_tokens") or MAX_INPUT_TOKENS),
        "truncation": training.get("truncation") or TRUNCATION,
    }


def rank(per_candidate: Sequence[tuple[float, int]], length_normalize: bool = False) -> tuple[int, list[float]]:
    """(index of the best candidate, ranking values) from `PromptedLM.score` output for one
    input: total log-likelihood, or its mean over tokens with `length_normalize`. Ties go to
    the first candidate."""
    values = [total / n if length_normalize else total for total, n in per_candidate]
    return max(range(len(values)), key=values.__getitem__), values


def evaluate(
    plm: PromptedLM,
    prompt: torch.Tensor,
    task: Task,
    examples: Sequence[Example],
    batch_size: int = 32,
    length_normalize: bool = False,
    progress: bool = False,
    ctx: Context = SINGLE,
    max_input_tokens: int = MAX_INPUT_TOKENS,
    truncation: str = TRUNCATION,
) -> Evaluation:
    """Predict and score `examples` with the task's metrics.

    With `ctx` a job of several workers (`distributed.context()`), each worker predicts its
    slice of the examples, the predictions and scores are gathered in order and the metrics
    computed on the whole list, so every worker gets exactly one process's result.
    """
    cut = {"max_input_tokens": max_input_tokens, "truncation": truncation}
    if not ctx.active:
        preds, scores = predict(plm, prompt, task, examples, batch_size, length_normalize, progress, **cut)
        return Evaluation(task.name, compute_metrics(task, preds, examples), preds, scores, len(examples))
    mine = shard(examples, ctx)
    shown = progress and ctx.main
    part = predict(plm, prompt, task, mine, batch_size, length_normalize, shown, **cut) if mine else ([], None)
    parts = all_gather_object(part, ctx, "evaluation")
    preds = [p for worker_preds, _ in parts for p in worker_preds]
    ranked = any(s is not None for _, s in parts)
    scores = [s for _, worker_scores in parts for s in (worker_scores or [])] if ranked else None
    return Evaluation(task.name, compute_metrics(task, preds, list(examples)), preds, scores, len(examples))
