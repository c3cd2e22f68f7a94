"""Ensembles of N prompts for one task: answer by mean probability (softmax over each
prompt's label scores, averaged) or by majority vote (ties to the higher mean probability).

`evaluate_ensemble` evaluates each member and the ensembles offline; the server combines
its members' answers with the same functions (`combine_members`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from softprompt.errors import ConfigError
from softprompt.evaluate import Evaluation, evaluate
from softprompt.scoring import PromptedLM
from softprompt.tasks.base import Example, Task
from softprompt.tasks.metrics import compute_metrics

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
