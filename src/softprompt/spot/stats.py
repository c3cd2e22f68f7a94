"""Paired statistics over seeds: is a transfer gain more than seed noise?

Two initialisations trained with the same seeds give paired scores a_i, b_i; d_i = a_i - b_i.

  bootstrap_ci(d)  percentile interval of mean(d) under resampling the seeds with replacement:
                   exact (the n-fold convolution of the empirical distribution) for n <= 8,
                   else a seeded Monte Carlo of 20,000 resamples
  sign_flip_p(d)   exact two-sided permutation p-value of mean(d): under "no effect" each d_i
                   is as likely to have had the other sign, so p is the share of the 2^n sign
                   assignments whose |sum| reaches the observed one
  wilcoxon_p(d)    exact two-sided Wilcoxon signed-rank p-value (zeros dropped, ties given
                   average ranks), by enumerating the 2^m sign assignments of the ranks
  holm(ps)         Holm's step-down adjustment of a family of p-values (a target's inits), so
                   that "some init gains" holds at the level over the family, not per test
  spearman_p(x, y) two-sided permutation p-value of a Spearman correlation (similarity vs
                   gain over one target's sources): exact over every permutation for n <= 8,
                   else a seeded Monte Carlo of 20,000

A gain is called significant when the sign-flip p is below the level (default 0.05). With n
seeds no exact two-sided test goes below 2 / 2^n: 5 seeds cannot reach 0.05 (0.0625), 6 can.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from softprompt.config import SIGNIFICANCE
from softprompt.errors import ConfigError
from softprompt.tasks.metrics import average_ranks

EXACT_BOOTSTRAP_MAX = 8  # seeds up to which the bootstrap distribution is enumerated exactly
EXACT_PERMUTATION_MAX = 8  # sources up to which every permutation is enumerated (8! = 40,320)
MONTE_CARLO = 20_000
_TOL = 1e-9  # score differences are sums of float percentages: compare with a tolerance


def differences(a: Sequence[float], b: Sequence[float]) -> list[float]:
    if len(a) != len(b) or not a:
        raise ConfigError(f"paired scores need the same seeds on both sides, got {len(a)} and {len(b)} scores")
    return [x - y for x, y in zip(a, b)]


def bootstrap_ci(d: Sequence[float], level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(d): the smallest means whose cumulative probability
    reaches (1 - level) / 2 and (1 + level) / 2."""
    n = len(d)
    lo_q, hi_q = (1 - level) / 2, (1 + level) / 2
    if n <= EXACT_BOOTSTRAP_MAX:
        sums = {0.0: 1.0}
        for _ in range(n):  # distribution of the sum of n draws with replacement
            nxt: dict[float, float] = {}
            for s, p in sums.items():
                for x in d:
                    key = round(s + x, 9)
                    nxt[key] = nxt.get(key, 0.0) + p / n
            sums = nxt
        values = sorted(sums)
        cdf = np.cumsum([sums[v] for v in values])

        def quantile(q: float) -> float:
            return values[int(np.searchsorted(cdf, q - 1e-12))] / n

        return quantile(lo_q), quantile(hi_q)
    rng = np.random.default_rng(seed)
    means = np.sort(np.asarray(d, dtype=float)[rng.integers(0, n, size=(MONTE_CARLO, n))].mean(axis=1))
    return float(means[max(0, math.ceil(lo_q * MONTE_CARLO) - 1)]), float(means[math.ceil(hi_q * MONTE_CARLO) - 1])


def sign_flip_p(d: Sequence[float]) -> float:
    """Exact two-sided permutation p-value of the mean difference (1.0 when every d_i is 0)."""
    observed = abs(sum(d))
    if observed <= _TOL:
        return 1.0
    hits = sum(
        abs(sum(s * x for s, x in zip(signs, d))) >= observed - _TOL
        for signs in itertools.product((1, -1), repeat=len(d))
    )
    return hits / 2 ** len(d)


def wilcoxon_p(d: Sequence[float]) -> float:
    """Exact two-sided Wilcoxon signed-rank p-value: P(|W+ - E W+| >= observed) over sign flips."""
    nonzero = [x for x in d if abs(x) > _TOL]
    if not nonzero:
        return 1.0
    ranks = average_ranks([round(abs(x), 9) for x in nonzero])  # equal gaps tie despite float noise
    w_plus = sum(r for r, x in zip(ranks, nonzero) if x > 0)
    centre = sum(ranks) / 2
    observed = abs(w_plus - centre)
    hits = sum(
        abs(sum(r for r, keep in zip(ranks, signs) if keep) - centre) >= observed - _TOL
        for signs in itertools.product((True, False), repeat=len(ranks))
    )
    return hits / 2 ** len(ranks)


def holm(ps: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the order given: the i-th smallest p times (m - i + 1), made
    non-decreasing in that order and capped at 1. Reject a hypothesis when its adjusted p is
    below the level: the chance of any false rejection in the family stays at the level."""
    order = sorted(range(len(ps)), key=lambda i: ps[i])
    adjusted, running = [1.0] * len(ps), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(ps) - rank) * ps[i]))
        adjusted[i] = running
    return adjusted


def spearman_p(x: Sequence[float], y: Sequence[float], seed: int = 0) -> float:
    """Two-sided permutation p-value of Spearman's r between `x` and `y`: the share of
    pairings (permutations of `y`) whose |r| reaches the observed |r|. Exact for n <= 8; above,
    (hits + 1) / (draws + 1) over a seeded Monte Carlo, so p is never 0. n < 3: 1.0."""
    n = len(x)
    if n != len(y):
        raise ConfigError(f"spearman_p: {n} x values against {len(y)} y values")
    if n < 3:
        return 1.0
    rx, ry = np.asarray(average_ranks(list(x))), np.asarray(average_ranks(list(y)))

    def r_of(perms: np.ndarray) -> np.ndarray:  # (N, n) rank permutations -> (N,) |Spearman r|
        a, b = rx - rx.mean(), perms - perms.mean(axis=1, keepdims=True)
        denom = np.sqrt((a**2).sum() * (b**2).sum(axis=1))
        return np.abs(np.divide(b @ a, denom, out=np.zeros(len(b)), where=denom > 0))

    observed = r_of(ry[None])[0]  # |spearman_r(x, y)|, computed the way every permutation is

    if n <= EXACT_PERMUTATION_MAX:
        perms = np.array(list(itertools.permutations(ry)))
        return float((r_of(perms) >= observed - _TOL).mean())
    rng = np.random.default_rng(seed)
    perms = np.array([rng.permutation(ry) for _ in range(MONTE_CARLO)])
    return float(((r_of(perms) >= observed - _TOL).sum() + 1) / (MONTE_CARLO + 1))


@dataclass
class Paired:
    """A gain over seeds (a - b, metric units) with its interval and exact p-values."""

    n: int
    gain: float
    ci_low: float
    ci_high: float
    p_sign_flip: float
    p_wilcoxon: float
    level: float = SIGNIFICANCE

    @property
    def significant(self) -> bool:
        return self.p_sign_flip < self.level

    @property
    def smallest_p(self) -> float:
        """The smallest two-sided p-value n seeds allow."""
        return smallest_p(self.n)

    def to_dict(self) -> dict:
        return {**asdict(self), "significant": self.significant, "word": self.word, "smallest_p": self.smallest_p}

    @property
    def word(self) -> str:
        """The verdict in words: "not significant", "significant", or "significant loss" below zero."""
        if not self.significant:
            return "not significant"
        return "significant" if self.gain >= 0 else "significant loss"

    def statement(self, scale: float = 100.0) -> str:
        """One plain line: the gain in points, its interval, p, and whether it is significant."""
        ci = 100 * (1 - self.level)
        head = (
            f"{scale * self.gain:+.2f} points ({ci:.0f}% CI {scale * self.ci_low:+.2f} to {scale * self.ci_high:+.2f}), "
            f"p = {self.p_sign_flip:.3g} (sign-flip), {self.p_wilcoxon:.3g} (Wilcoxon), {self.n} seeds: "
        )
        if self.significant:
            return head + self.word
        if self.smallest_p >= self.level:
            return head + f"not significant (with {self.n} seeds p cannot go below {self.smallest_p:.3g}; use more seeds)"
        return head + "not significant"


def smallest_p(n: int) -> float:
    """The smallest two-sided p-value an exact paired test over n seeds can give: 2 / 2^n."""
    return 2 / 2**n


def seeds_needed(family: int = 1, level: float = SIGNIFICANCE) -> int:
    """The fewest seeds with which a gain can be significant after Holm over `family` tests:
    the smallest n with family * 2 / 2^n < level (6 for one test at 0.05, 10 for 13)."""
    n = 1
    while family * smallest_p(n) >= level:
        n += 1
    return n


def paired(a: Sequence[float], b: Sequence[float], level: float = SIGNIFICANCE) -> Paired:
    """The paired comparison of scores `a` against `b` (same seeds, in the same order)."""
    d = differences(a, b)
    low, high = bootstrap_ci(d, 1 - level)
    return Paired(len(d), sum(d) / len(d), low, high, sign_flip_p(d), wilcoxon_p(d), level)
