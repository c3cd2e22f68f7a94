"""Mean and sample standard deviation over seeds: the one summary every table prints."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence


def mean(values: Iterable[float]) -> float:
    return statistics.fmean(values)


def std(values: Sequence[float]) -> float:
    """Sample standard deviation (n - 1), 0 for a single value."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    return mean(values), std(values)
