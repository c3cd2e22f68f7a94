"""Multi-task mixtures: one prompt trained on several tasks at once (SPoT §2, after T5).

A mixture keeps each example with its own task, so every example is formatted by its own
task's template and scored by its own verbalizer; only the prompt is shared. Tasks are
mixed *examples-proportionally with a cap K* (Raffel et al. 2020 §3.5.2, the mixing SPoT
uses): task i is drawn at rate min(n_i, K) / sum_j min(n_j, K), so a huge task cannot
drown the others. The stream is built in rounds: each round takes min(n_i, K) examples of
task i (a fresh seeded sample without replacement for capped tasks, all of them
otherwise), shuffles, and cuts length-bucketed batches as `bucketed_batches` does.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from softprompt.batching import bucketed_batches
from softprompt.errors import ConfigError
from softprompt.tasks.base import Task


@dataclass(frozen=True)
class Mixture:
    """Several tasks trained as one, mixed examples-proportionally with cap `cap`.

    Attributes:
        tasks: The member tasks, each with its own template, verbalizer and metrics.
        cap: K, the most examples one task counts for in the mixing rates; None = no cap.
    """

    tasks: tuple[Task, ...]
    cap: int | None = None

    def __post_init__(self) -> None:
        names = [t.name for t in self.tasks]
        if len(names) < 2:
            raise ConfigError(f"--task: a mixture needs at least two tasks, got {','.join(names) or 'none'}")
        if len(set(names)) != len(names):
            raise ConfigError(f"--task {','.join(names)}: a task is listed twice")
        if self.cap is not None and self.cap < 1:
            raise ConfigError(f"--mixture-cap must be at least 1, got {self.cap}")

    @property
    def name(self) -> str:
        return "+".join(t.name for t in self.tasks)

    @property
    def metrics(self) -> tuple[str, ...]:
        """The dev score of a mixture: the mean of each task's primary metric."""
        return ("mean",)

    def meta(self) -> dict:
        """What a prompt trained on this mixture records as its task."""
        return {
            "name": self.name,
            "template": None,
            "verbalizer": None,
            "metrics": list(self.metrics),
            "mixture": [{"name": t.name, "template": t.template, "verbalizer": dict(t.verbalizer or {}) or None,
                         "metrics": list(t.metrics)} for t in self.tasks],
            "mixture_cap": self.cap,
            "description": f"mixture of {', '.join(t.name for t in self.tasks)}, examples-proportional, cap {self.cap}",
        }


def parse_tasks(spec: str, cap: int | None = None) -> Task | Mixture:
    """`--task` value: one task name, or a comma list naming a mixture."""
    from softprompt.tasks import get_task

    names = [n.strip() for n in spec.split(",") if n.strip()]
    if len(names) == 1:
        return get_task(names[0])
    return Mixture(tuple(get_task(n) for n in names), cap)


def mixing_rates(sizes: Sequence[int], cap: int | None) -> list[float]:
    """Examples-proportional rates with cap: min(n_i, K) / sum_j min(n_j, K)."""
    counted = [min(n, cap) if cap else n for n in sizes]
    total = sum(counted)
    if total == 0:
        raise ConfigError("a mixture needs training examples")
    return [c / total for c in counted]


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
        chosen = [off + j for off, task_lengths in zip(offsets, lengths)
                  for j in rng.sample(range(len(task_lengths)), min(cap, len(task_lengths)))]
        rng.shuffle(chosen)
        pool = batch_size * bucket_batches
        for start in range(0, len(chosen), pool):
            chunk = sorted(chosen[start : start + pool], key=lambda i: flat[i])
            batches = [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
            rng.shuffle(batches)
            yield from (b for b in batches if len(b) == batch_size or len(chosen) < batch_size)
