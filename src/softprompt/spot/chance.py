"""Did a source prompt learn its task? Its dev score against the best answer that ignores the input.

A source that never got clear of its majority answer transfers worse than one that learned its
task, whatever the task (CB from every shipped source, and RTE in a test stated in advance: see
docs/benchmarks/transfer.md), and a task embedding cannot tell the two apart. So `library build`
records beside each entry's dev metrics the *constant baseline*: per metric, the best score one
answer given to every example of the same dev sample gets (the majority label for accuracy, 0 for
a correlation), and whether the prompt beats it by more than sampling noise:

    z = (score - baseline) / se,  learned when z >= the one-sided normal quantile at SIGNIFICANCE

with se = sqrt(b (1 - b) / n) for metrics that are a share of the n examples (accuracy, exact
match; b the baseline, kept at least 1/n from 0 and 1) and 1 / sqrt(n) for correlations, whose
standard error is about that when there is no relation (Matthews, Pearson, Spearman). F1-type
metrics have no closed form here and use the share's formula as an approximation. A mixture
learned if any member task did (its members' "task/metric" keys).

Retrieval (`transfer.retrieve`, the study's best-of-top-k) ranks the sources known to be at
their constant baseline after the others; an entry without a recorded baseline counts as
learned (nothing is known against it).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from statistics import NormalDist

from softprompt.config import SIGNIFICANCE
from softprompt.io import load_prompt
from softprompt.spot import library
from softprompt.tasks import Example, Task, dev_sample, get_task, task_names
from softprompt.tasks.metrics import compute_metrics, normalize_answer
from softprompt.tasks.mixture import member_metric

CORRELATION_METRICS = frozenset({"matthews", "pearson", "spearman"})
MOST_COMMON_ANSWERS = 20  # generation tasks: the constant answers tried (the sample's most common references)


def constant_answers(task: Task, examples: Sequence[Example]) -> list[list[str]]:
    """Every input-blind answer sheet to try: one per class label; for per-example choices one per
    position (always the first choice, always the second, ...); for generation the sample's most
    common references, each given to every example."""
    if any(e.choices for e in examples):
        options = [e.choices or (e.target,) for e in examples]
        return [[o[min(k, len(o) - 1)] for o in options] for k in range(max(map(len, options)))]
    if task.is_classification:
        return [[label] * len(examples) for label in task.labels]
    counts = Counter(normalize_answer(a) for e in examples for a in (e.answers or (e.target,)))
    return [[answer] * len(examples) for answer, _ in counts.most_common(MOST_COMMON_ANSWERS)]


def constant_scores(task: Task, examples: Sequence[Example]) -> dict[str, float]:
    """Per metric of `task`, the best score an input-blind answer sheet gets on `examples`."""
    best: dict[str, float] = {name: 0.0 for name in task.metrics}
    for preds in constant_answers(task, examples):
        for name, value in compute_metrics(task, preds, examples).items():
            best[name] = max(best[name], value)
    return best


def baseline(tasks: Sequence[Task], max_eval: int | None) -> dict:
    """The constant baseline on the dev sample a run scores (`dev_sample(dev, max_eval)` per task):
    {"metrics": keys as the run's metrics ("task/metric" for a mixture), "examples": {task: n}}."""
    metrics, examples = {}, {}
    for task in tasks:
        dev = dev_sample(task.load("dev"), max_eval)
        scores = constant_scores(task, dev).items()
        metrics.update({member_metric(task.name, k) if len(tasks) > 1 else k: v for k, v in scores})
        examples[task.name] = len(dev)
    return {"metrics": metrics, "examples": examples}


def z_score(metric: str, score: float, base: float, n: int) -> float:
    """How many standard errors `score` is above the constant baseline `base` on `n` dev examples."""
    if metric in CORRELATION_METRICS:
        se = 1 / math.sqrt(n)
    else:
        b = min(max(base, 1 / n), 1 - 1 / n)
        se = math.sqrt(b * (1 - b) / n)
    return (score - base) / se


def verdict(metrics: dict[str, float], primary: dict[str, str], chance: dict) -> dict:
    """Whether a prompt with dev `metrics` learned its task(s): {"learned", "z", "by": {task: z}}.

    Args:
        primary: task -> its primary metric (one task: the key is read plainly, not as "task/metric").
        chance: `baseline(...)` of the same dev sample.
    """
    mixture = len(primary) > 1
    by = {}
    for task, metric in primary.items():
        key = member_metric(task, metric) if mixture else metric
        if key in metrics and key in chance["metrics"]:
            by[task] = z_score(metric, metrics[key], chance["metrics"][key], chance["examples"][task])
    if not by:
        return {"learned": None, "z": None, "by": by}
    z = max(by.values())
    return {"learned": z >= NormalDist().inv_cdf(1 - SIGNIFICANCE), "z": z, "by": by}


def record(tasks: Sequence[Task], metrics: dict[str, float], max_eval: int | None) -> dict:
    """What an entry stores as "chance": the constant baseline of its dev sample and the verdict."""
    chance = baseline(tasks, max_eval)
    return {**chance, **verdict(metrics, {t.name: t.metrics[0] for t in tasks}, chance), "max_eval": max_eval}


def fill_library(library_dir: Path, overwrite: bool = False) -> list[tuple[library.Entry, str]]:
    """Record "chance" in every entry of `library_dir` that lacks it (all with `overwrite`), from
    its tasks' dev data and the dev-sample size it was trained with; (entry, what was done) each.
    Entries of tasks that are not built in (a user's own files) are left as they are."""
    done = []
    for entry in library.entries(library_dir):
        if entry.meta.get("chance") and not overwrite:
            done.append((entry, "kept"))
            continue
        names = entry.meta.get("tasks") or [entry.meta.get("task") or entry.name]
        if not all(n in task_names() for n in names):
            done.append((entry, "skipped: not a built-in task"))
            continue
        settings = entry.meta.get("training") or load_prompt(entry.prompt_dir).training
        found = record([get_task(n) for n in names], entry.meta.get("metrics", {}), settings.get("max_eval"))
        done.append((library.update_meta(entry, chance=found), "added"))
    return done
