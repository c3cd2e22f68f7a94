"""Paired statistics over seeds (spot/stats.py) against values computed by hand."""

from __future__ import annotations

import pytest

from softprompt.errors import ConfigError
from softprompt.spot.stats import bootstrap_ci, holm, paired, seeds_needed, sign_flip_p, spearman_p, wilcoxon_p


def test_sign_flip_p_counts_the_sign_assignments_reaching_the_observed_sum():
    # 3, -1, 2: sum 4; the 8 flips give sums 6, 4, 2, 0, 0, -2, -4, -6; |s| >= 4 for 4 of them.
    assert sign_flip_p([3, -1, 2]) == pytest.approx(4 / 8)
    # All five positive: only all-plus and all-minus reach |15|: 2 / 32.
    assert sign_flip_p([1, 2, 3, 4, 5]) == pytest.approx(2 / 32)
    assert sign_flip_p([0.1, 0.2, 0.3, 0.1, 0.2, 0.1]) == pytest.approx(2 / 64)
    # 1, 1, -1, 1: every flipped term is +-1, so a flip with k plus signs sums to 2k - 4;
    # |2k - 4| >= 2 for k = 0, 1, 3, 4: 1 + 4 + 4 + 1 = 10 of 16.
    assert sign_flip_p([1, 1, -1, 1]) == pytest.approx(10 / 16)
    assert sign_flip_p([0, 0, 0]) == 1.0


def test_wilcoxon_p_is_the_exact_signed_rank_distribution():
    # 3, -1, 2: ranks 3, 1, 2; W+ = 5, centre 3; subset sums of {1,2,3}: 0 1 2 3 3 4 5 6,
    # |W - 3| >= 2 for 0, 1, 5, 6: 4 / 8.
    assert wilcoxon_p([3, -1, 2]) == pytest.approx(4 / 8)
    # six positive differences: W+ = 21 is the extreme of 64 assignments, two-sided 2 / 64.
    assert wilcoxon_p([0.5, 0.1, 0.2, 0.3, 0.4, 0.6]) == pytest.approx(2 / 64)
    # A zero is dropped; ties share a rank: 2, 2, -1 -> ranks 2.5, 2.5, 1; W+ = 5, centre 3;
    # subset sums of {2.5, 2.5, 1}: 0 1 2.5 2.5 3.5 3.5 5 6, |W - 3| >= 2 for 0, 1, 5, 6: 4 / 8.
    assert wilcoxon_p([2, 0, 2, -1]) == pytest.approx(4 / 8)
    # Score differences that are equal up to float noise tie.
    assert wilcoxon_p([0.3 - 0.2, 0.1, -0.05]) == wilcoxon_p([0.1, 0.1, -0.05])


def test_bootstrap_interval_is_the_exact_resampling_distribution_for_few_seeds():
    # d = 0, 2: resampled means 0 (1/4), 1 (1/2), 2 (1/4): the 95 % interval is [0, 2],
    # the 40 % interval (quantiles 0.3 and 0.7) is [1, 1].
    assert bootstrap_ci([0, 2]) == pytest.approx((0.0, 2.0))
    assert bootstrap_ci([0, 2], level=0.4) == pytest.approx((1.0, 1.0))
    # d = 0, 0, 3: means 0 (8/27), 1 (12/27), 2 (6/27), 3 (1/27); 90 %: quantile 0.05 -> 0,
    # quantile 0.95 -> 2 (cumulative 26/27 = 0.963 first reaches it).
    assert bootstrap_ci([0, 0, 3], level=0.9) == pytest.approx((0.0, 2.0))
    assert bootstrap_ci([1.5] * 9) == pytest.approx((1.5, 1.5))  # Monte Carlo path (n > 8)
    low, high = bootstrap_ci([0, 1] * 10)
    assert 0.25 <= low < 0.5 < high <= 0.75


def test_paired_gain_and_its_plain_statement():
    six = paired([0.6, 0.7, 0.8, 0.9, 0.7, 0.8], [0.5] * 6)
    assert six.gain == pytest.approx(0.25) and six.p_sign_flip == pytest.approx(2 / 64) and six.significant
    assert six.statement().endswith("6 seeds: significant")
    five = paired([0.6, 0.7, 0.8, 0.9, 0.7], [0.5] * 5)
    assert not five.significant and five.smallest_p == pytest.approx(0.0625)
    assert "not significant (with 5 seeds p cannot go below 0.0625" in five.statement()
    mixed = paired([0.6, 0.4, 0.5, 0.7, 0.3, 0.6], [0.5] * 6)
    assert not mixed.significant and mixed.statement().endswith("not significant")
    assert mixed.ci_low < 0 < mixed.ci_high
    worse = paired([0.5] * 6, [0.6, 0.7, 0.8, 0.9, 0.7, 0.8])
    assert worse.significant and worse.statement().endswith("6 seeds: significant loss")
    # The verdict word (study.json, the study table) says "not significant" for a loss within noise too.
    assert [t.word for t in (six, worse, mixed, paired([0.4] * 5, [0.5] * 5))] == [
        "significant", "significant loss", "not significant", "not significant"]
    with pytest.raises(ConfigError, match="same seeds"):
        paired([0.1, 0.2], [0.1])


def test_holm_multiplies_the_ith_smallest_p_by_the_hypotheses_left_and_keeps_the_order():
    # sorted: 0.01 x 4 = 0.04, 0.03 x 3 = 0.09, 0.04 x 2 = 0.08 -> 0.09 (never below the one before), 0.2 x 1
    assert holm([0.01, 0.04, 0.03, 0.2]) == pytest.approx([0.04, 0.09, 0.09, 0.2])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([0.02]) == pytest.approx([0.02])  # a family of one is not adjusted
    assert holm([]) == []


def test_spearman_p_counts_the_pairings_whose_correlation_reaches_the_observed_one():
    # n = 4, perfectly ordered: only the identity and the reversal reach |r| = 1: 2 of 24.
    assert spearman_p([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(2 / 24)
    assert spearman_p([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(2 / 24)
    # n = 3, ranks 1 2 3 against 1 3 2: r = 0.5; the 6 pairings give r = 1, .5, .5, -.5, -.5, -1,
    # all with |r| >= 0.5: p = 1.
    assert spearman_p([1, 2, 3], [1, 3, 2]) == pytest.approx(1.0)
    assert spearman_p([1, 2], [2, 1]) == 1.0  # too few to test
    assert spearman_p([1, 2, 3, 4], [5, 5, 5, 5]) == pytest.approx(1.0)  # no variance: r = 0
    # n = 13 (Monte Carlo): a perfect order is about as rare as it gets; a shuffle is not.
    x = list(range(13))
    assert spearman_p(x, x) == pytest.approx(1 / 20_001)
    assert spearman_p(x, [5, 11, 0, 9, 3, 12, 1, 7, 10, 2, 8, 4, 6]) > 0.2
    with pytest.raises(ConfigError):
        spearman_p([1, 2, 3], [1, 2])


def test_seeds_needed_for_a_gain_to_survive_holm():
    assert seeds_needed() == 6  # 2/32 = 0.0625 >= 0.05 > 2/64
    assert seeds_needed(13) == 10  # 13 x 2/512 = 0.051, 13 x 2/1024 = 0.025
    assert seeds_needed(3) == 7  # 3 x 2/64 = 0.094, 3 x 2/128 = 0.047
