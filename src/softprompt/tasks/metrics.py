"""Official metrics, by name.

Each metric takes the predictions (a class label for classification tasks, the
generated text otherwise), the gold examples and the task, and returns one float on the
natural scale (accuracy in [0, 1], correlations in [-1, 1]). Tables multiply by 100.

Conventions:
    - Binary F1 (`f1`) scores the task's positive class, which is the LAST label of
      the task's verbalizer (so verbalizers list the negative class first).
    - Degenerate inputs never give NaN: a correlation or Matthews coefficient with a
      constant side is 0.0, an F1 with no positive predictions or gold labels is 0.0.
    - Grouped metrics (`multirc_em`, `gender_parity`) group examples by
      `Example.group`.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence

from softprompt.tasks.base import Example, Task

Metric = Callable[[Sequence[str], Sequence[Example], Task], float]


def accuracy(preds: Sequence[str], examples: Sequence[Example], task: Task) -> float:
    return sum(p == e.target for p, e in zip(preds, examples)) / max(len(examples), 1)


def normalize_answer(text: str) -> str:
    """SQuAD v1.1 answer normalisation: lower case, drop punctuation, articles and extra spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _token_f1(pred: str, gold: str) -> float:
    p, g = normalize_answer(pred).split(), normalize_answer(gold).split()
    common = Counter(p) & Counter(g)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def squad_em(preds: Sequence[str], examples: Sequence[Example], task: Task) -> float:
    hits = [max(normalize_answer(p) == normalize_answer(a) for a in e.references) for p, e in zip(preds, examples)]
    return sum(hits) / max(len(hits), 1)


def squad_f1(preds: Sequence[str], examples: Sequence[Example], task: Task) -> float:
    scores = [max(_token_f1(p, a) for a in e.references) for p, e in zip(preds, examples)]
    return sum(scores) / max(len(scores), 1)


def _binary_f1(preds: Sequence[str], golds: Sequence[str], positive: str) -> float:
    tp = sum(p == positive and g == positive for p, g in zip(preds, golds))
    fp = sum(p == positive and g != positive for p, g in zip(preds, golds))
    fn = sum(p != positive and g == positive for p, g in zip(preds, golds))
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def f1(preds: Sequence[str], examples: Sequence[Example], task: Task) -> float:
    """Binary F1 of the positive class: the last label of the task's verbalizer."""
    if not task.labels:
        raise ValueError(f"task {task.name!r}: f1 needs a verbalizer to name the positive class")
    return _binary_f1(preds, [e.target for e in examples], task.labels[-1])


def macro_f1(preds: Sequence[str], examples: Sequence[Example], task: Task) -> float:
    """Unweighted mean of the per-class F1 over the task's labels (CB)."""
    golds = [e.target for e in examples]
    labels = task.labels or tuple(sorted(set(golds)))
    if not labels:
        return 0.0
    return sum(_binary_f1(preds, golds, label) for label in labels) / len(labels)


def matthews(preds: Sequence[str], examples: Sequence[Example], task: Task) -> float:
    """Matthews correlation coefficient (multi-class form, as scikit-learn).

    Returns 0.0 when either side is constant (the coefficient is undefined there).
    """
    golds = [e.target for e in examples]
    n = len(golds)
    correct = sum(p == g for p, g in zip(preds, golds))
    pred_counts, gold_counts = Counter(preds), Counter(golds)
    labels = set(pred_counts) | set(gold_counts)
    cov_pg = correct * n - sum(pred_counts[k] * gold_counts[k] for k in labels)
    cov_pp = n * n - sum(c * c for c in pred_counts.values())
    cov_gg = n * n - sum(c * c for c in gold_counts.values())
    if cov_pp == 0 or cov_gg == 0:
        return 0.0
    return cov_pg / math.sqrt(cov_pp * cov_gg)


def _to_float(text: str) -> float:
    try:
        value = float(text.strip())
    except (ValueError, AttributeError):
        return 0.0
    return value if math.isfinite(value) else 0.0


def pearson_r(xs: Sequence[float], ys: Sequence[float], constant: float = 0.0) -> float:
    """Pearson correlation of two number lists; `constant` when either side has no variance
    (0.0 for STS-B, as scipy-based GLUE scorers report it; nan where "undefined" is the honest answer)."""
    n = len(xs)
    if n < 2:
        return constant
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx == 0 or syy == 0:
        return constant
    return max(-1.0, min(1.0, sxy / math.sqrt(sxx * syy)))


def average_ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks; tied values share the mean of the ranks they span."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for i in order[start : end + 1]:
            ranks[i] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman_r(xs: Sequence[float], ys: Sequence[float], constant: float = 0.0) -> float:
    """Spearman rank correlation: Pearson over average ranks (ties share their mean rank)."""
    return pearson_r(average_ranks(xs), average_ranks(ys), constant)


def pearson(preds: Sequence[str], examples: Sequence[Example], task: Task) -> float:
    """Pearson correlation of numeric predictions with numeric targets (STS-B).

    Unparsable predictions count as 0.0; constant predictions give 0.0.
    """
    return pearson_r([_to_float(p) for p in preds], [_to_float(e.target) for e in examples])


def spearman(preds: Sequence[str], examples: Sequence[Example], task: Task) -> float:
    """Spearman rank correlation (average ranks for ties) of numeric predictions (STS-B)."""
    return spearman_r([_to_float(p) for p in preds], [_to_float(e.target) for e in examples])


def multirc_f1a(preds: Sequence[str], examples: Sequence[Example], task: Task) -> float:
    """Binary F1 over every answer option, positive class "true" (MultiRC F1a)."""
    return _binary_f1(preds, [e.target for e in examples], "true")


def _groups(examples: Sequence[Example], keep_ungrouped: bool) -> list[list[int]]:
    """Example indices by `Example.group`, in first-seen order.

    Ungrouped examples each form their own group if `keep_ungrouped`, else are dropped.
    """
    groups: dict[object, list[int]] = defaultdict(list)
    for i, example in enumerate(examples):
        if example.group is not None:
            groups[example.group].append(i)
        elif keep_ungrouped:
            groups[("ungrouped", i)].append(i)
    return list(groups.values())


def multirc_em(preds: Sequence[str], examples: Sequence[Example], task: Task) -> float:
    """Fraction of questions (groups) whose answer options are all labelled right."""
    groups = _groups(examples, keep_ungrouped=True)
    hits = [all(preds[i] == examples[i].target for i in group) for group in groups]
    return sum(hits) / max(len(hits), 1)


def record_em(preds: Sequence[str], examples: Sequence[Example], task: Task) -> float:
    """ReCoRD exact match: max over the gold answers, SQuAD-normalised, mean over examples."""
    return squad_em(preds, examples, task)


def record_f1(preds: Sequence[str], examples: Sequence[Example], task: Task) -> float:
    """ReCoRD token F1: max over the gold answers, SQuAD-normalised, mean over examples."""
    return squad_f1(preds, examples, task)


def gender_parity(preds: Sequence[str], examples: Sequence[Example], task: Task) -> float:
    """Fraction of minimal pairs (examples sharing `Example.group`) predicted alike (AX-g).

    Ungrouped examples are ignored; with no groups at all the score is 0.0.
    """
    groups = _groups(examples, keep_ungrouped=False)
    same = [len({preds[i] for i in group}) == 1 for group in groups]
    return sum(same) / max(len(same), 1)


METRICS: dict[str, Metric] = {
    "accuracy": accuracy,
    "f1": f1,
    "macro_f1": macro_f1,
    "matthews": matthews,
    "pearson": pearson,
    "spearman": spearman,
    "squad_em": squad_em,
    "squad_f1": squad_f1,
    "multirc_f1a": multirc_f1a,
    "multirc_em": multirc_em,
    "record_em": record_em,
    "record_f1": record_f1,
    "gender_parity": gender_parity,
}


def compute_metrics(task: Task, preds: Sequence[str], examples: Sequence[Example]) -> dict[str, float]:
    """Every metric of `task` on `preds` against `examples`, in the task's order."""
    if len(preds) != len(examples):
        raise ValueError(f"{len(preds)} predictions for {len(examples)} examples")
    return {name: float(METRICS[name](preds, examples, task)) for name in task.metrics}
