"""Multi-task mixtures: one prompt trained on several tasks at once (SPoT §2, after T5).

A mixture keeps each example with its own task, so every example is formatted by its own
task's template and scored by its own verbalizer; only the prompt is shared. Tasks are
mixed *examples-proportionally with a cap K* (Raffel et al. 2020 §3.5.2, the mixing SPoT
uses): task i is drawn at rate min(n_i, K) / sum_j min(n_j, K), so a huge task cannot
drown the others. The stream is built in rounds: each round takes min(n_i, K) examples of
task i (a fresh seeded sample without replacement for capped tasks, all of them
otherwise), shuffles, and cuts length-bucketed batches as `bucketed_batches` does (the
stream itself is `batching.mixture_batches`: tasks know nothing of tokens).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from softprompt.errors import ConfigError
from softprompt.tasks.base import Task


def member_metric(task: str, metric: str) -> str:
    """The key under which a mixture's dev metrics report one member task's metric."""
    return f"{task}/{metric}"


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
            "mixture": [
                {
                    "name": t.name,
                    "template": t.template,
                    "verbalizer": dict(t.verbalizer or {}) or None,
                    "metrics": list(t.metrics),
                }
                for t in self.tasks
            ],
            "mixture_cap": self.cap,
            "description": f"mixture of {', '.join(t.name for t in self.tasks)}, examples-proportional, cap {self.cap}",
        }


def parse_tasks(spec: str, cap: int | None = None) -> Task | Mixture:
    """`--task` value: one task name, or a comma list naming a mixture."""
    from softprompt.tasks.base import get_task

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
