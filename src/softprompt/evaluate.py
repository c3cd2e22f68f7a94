"""Evaluate a prompt on a task: rank classification or greedy generation, then metrics.

Rank classification scores every candidate label by the log-likelihood of its full
token sequence and picks the best, so a prediction is always one of the labels.

An ensemble of N prompts for one task answers by mean probability (softmax over each
prompt's label scores, averaged) or by majority vote (ties to the higher mean probability);
the server combines its members' answers with the same functions.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from softprompt.batching import Encoder, sorted_batches
from softprompt.errors import ConfigError
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
) -> tuple[list[str], list[list[float]] | None]:
    """Predictions for `examples`: class labels (or chosen candidates) for tasks with
    candidates, generated text otherwise; plus per-candidate scores when ranking."""
    enc = Encoder(plm.lm.tokenizer, plm.lm.is_encoder_decoder)
    inputs = [enc.input_ids(task.format(e)) for e in examples]
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
) -> Evaluation:
    """Predict and score `examples` with the task's metrics."""
    preds, scores = predict(plm, prompt, task, examples, batch_size, length_normalize, progress)
    return Evaluation(task.name, compute_metrics(task, preds, examples), preds, scores, len(examples))


# -- ensembles ----------------------------------------------------------------------------

ENSEMBLE_METHODS = ("mean", "vote")


def softmax(values: Sequence[float]) -> list[float]:
    """Probabilities over candidates from their scores (log-likelihoods)."""
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def candidate_names(task: Task, example: Example) -> tuple[str, ...]:
    """What a ranking prediction of `example` is named by: class labels, or its choices."""
    return task.labels if example.choices is None else example.choices


def combine_members(
    names: Sequence[str] | None,
    preds: Sequence[str],
    scores: Sequence[Sequence[float]] | None,
    method: str = "mean",
) -> tuple[str, list[float] | None]:
    """One example's ensemble answer from its N members' answers.

    Args:
        names: Candidate names (labels) the scores are over; None for generation.
        preds: Each member's prediction.
        scores: Each member's ranking values over `names`, or None for generation.
        method: "mean" (argmax of the mean probability) or "vote" (most member
            predictions; ties to the higher mean probability, for generation to the
            earliest member).

    Returns:
        The prediction and the mean probability per candidate (None for generation).
    """
    if method not in ENSEMBLE_METHODS:
        raise ConfigError(f"ensemble method {method!r}: expected one of {', '.join(ENSEMBLE_METHODS)}")
    if scores is None or names is None:
        votes = Counter(preds)
        return max(preds, key=lambda p: votes[p]), None  # max keeps the earliest of equals
    probs = [softmax(s) for s in scores]
    mean = [sum(p[k] for p in probs) / len(probs) for k in range(len(names))]
    if method == "mean":
        return names[max(range(len(names)), key=mean.__getitem__)], mean
    votes = Counter(preds)
    return names[max(range(len(names)), key=lambda k: (votes[names[k]], mean[k]))], mean


def combine_predictions(
    task: Task,
    examples: Sequence[Example],
    members: Sequence[tuple[list[str], list[list[float]] | None]],
    method: str = "mean",
) -> tuple[list[str], list[list[float]] | None]:
    """Ensemble predictions from each member's `predict` output over the same examples."""
    ranking = members[0][1] is not None
    preds, probs = [], []
    for i, example in enumerate(examples):
        names = candidate_names(task, example) if ranking else None
        member_scores = [m[1][i] for m in members] if ranking else None
        pred, mean = combine_members(names, [m[0][i] for m in members], member_scores, method)
        preds.append(pred)
        probs.append(mean)
    return preds, (probs if ranking else None)


@dataclass
class EnsembleEvaluation:
    """Each member's evaluation, the members' average metrics, and the ensembles' evaluations."""

    members: list[Evaluation]
    average: dict[str, float]
    ensembles: dict[str, Evaluation]


def evaluate_ensemble(
    plm: PromptedLM,
    prompts: Sequence[torch.Tensor],
    task: Task,
    examples: Sequence[Example],
    batch_size: int = 32,
    length_normalize: bool = False,
    progress: bool = False,
) -> EnsembleEvaluation:
    """Evaluate each of N prompts on `examples`, then their ensembles: mean probability and
    majority vote for ranking tasks, majority vote for generation."""
    members = [evaluate(plm, p, task, examples, batch_size, length_normalize, progress) for p in prompts]
    outputs = [(m.predictions, m.scores) for m in members]
    average = {k: sum(m.metrics[k] for m in members) / len(members) for k in members[0].metrics}
    methods = ENSEMBLE_METHODS if members[0].scores is not None else ("vote",)
    ensembles = {}
    for method in methods:
        preds, scores = combine_predictions(task, examples, outputs, method)
        ensembles[method] = Evaluation(task.name, compute_metrics(task, preds, examples), preds, scores, len(examples))
    return EnsembleEvaluation(members, average, ensembles)
