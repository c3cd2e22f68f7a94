"""A time budget turned into a step count (`--time-budget 10m`).

Training first runs `PROBE_STEPS` steps, then fixes the step count from the measured seconds
per step and per dev evaluation so that the run, evaluations included, ends within the budget;
it plans again after every evaluation, with that evaluation's measured cost. Before the first
evaluation its cost is guessed from the training speed: scoring an example is a forward pass
only, about a third of a training example's forward and backward (`EVAL_SHARE` leaves a
margin). Guessing the whole training cost instead planned so few steps on slow machines that
an evaluation meant as the last ran after 5 steps and took a third of a 10-minute budget.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

PROBE_STEPS = 5  # steps timed before the first plan (the first is not counted: it warms caches)
EVAL_SHARE = 0.4  # guessed cost of scoring a dev example, as a share of training one (measured: 0.36)


def evaluations(done: int, total: int, eval_every: int, evaluated: bool) -> int:
    """Dev evaluations still to run in a run of `total` steps, `done` steps trained: one every
    `eval_every` steps and one after the last step; step `done`'s own unless already `evaluated`."""
    first = done + 1 if evaluated or done == 0 else done
    if total < first:
        return 0
    return total // eval_every - (first - 1) // eval_every + (1 if total % eval_every else 0)


def steps_within(left_s: float, done: int, step_s: float, eval_s: float, eval_every: int, evaluated: bool) -> int:
    """The most steps (at least `done`) whose remaining steps and evaluations fit in `left_s` seconds."""

    def cost(total: int) -> float:
        return (total - done) * step_s + evaluations(done, total, eval_every, evaluated) * eval_s

    low, high = done, done + int(max(left_s, 0) / max(step_s, 1e-9)) + 1
    while low < high:  # cost grows with the step count
        mid = (low + high + 1) // 2
        if cost(mid) <= left_s:
            low = mid
        else:
            high = mid - 1
    return low


class TimeBudget:
    """Measures a run's speed and plans its step count to end within `seconds` of its start."""

    def __init__(self, seconds: float, eval_every: int, clock: Callable[[], float] = time.perf_counter) -> None:
        self.seconds, self.eval_every, self.clock = seconds, eval_every, clock
        self.started = clock()
        self.step_times: list[float] = []
        self.eval_s: float | None = None

    def record_step(self, seconds: float) -> None:
        self.step_times.append(seconds)

    def record_eval(self, seconds: float) -> None:
        self.eval_s = seconds

    @property
    def step_s(self) -> float:
        times = self.step_times[1:] or self.step_times
        return sum(times) / len(times) if times else math.inf

    def plan(self, done: int, eval_examples: int, batch_size: int, evaluated: bool = False) -> int:
        """The step count to stop at, `done` steps trained (`evaluated`: step `done`'s evaluation ran)."""
        guess = EVAL_SHARE * self.step_s * eval_examples / batch_size  # before any evaluation was timed
        eval_s = self.eval_s if self.eval_s is not None else guess
        left = self.seconds - (self.clock() - self.started)
        return steps_within(left, done, self.step_s, eval_s, self.eval_every, evaluated)
