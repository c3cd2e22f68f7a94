"""Official metrics on small fixed inputs whose values are worked out by hand."""

from __future__ import annotations

import math
import random

import pytest

from softprompt.tasks.base import Example, Task
from softprompt.tasks.metrics import (
    METRICS,
    compute_metrics,
    f1,
    gender_parity,
    macro_f1,
    matthews,
    multirc_em,
    multirc_f1a,
    normalize_answer,
    pearson,
    record_em,
    record_f1,
    spearman,
    squad_em,
    squad_f1,
)


def _task(verbalizer: dict[str, str] | None, metrics: tuple[str, ...] = ("accuracy",)) -> Task:
    return Task("t", "t x: {x}", verbalizer, metrics, loader=lambda split: [])


def _examples(targets: list[str], groups: list[str | None] | None = None) -> list[Example]:
    groups = groups or [None] * len(targets)
    return [Example({"x": str(i)}, t, group=g) for i, (t, g) in enumerate(zip(targets, groups))]


BINARY = _task({"no": "no", "yes": "yes"})
CB_LIKE = _task({"entailment": "yes", "neutral": "maybe", "contradiction": "no"})
SCORES = _task(None)


def test_f1_scores_the_last_verbalizer_label():
    # tp 2 (0, 3), fp 1 (1), fn 1 (2): F1 = 2*2 / (2*2 + 1 + 1).
    golds = _examples(["yes", "no", "yes", "yes"])
    assert f1(["yes", "yes", "no", "yes"], golds, BINARY) == pytest.approx(2 / 3)
    flipped = _task({"yes": "yes", "no": "no"})
    # Positive is now "no": tp 0 -> 0.0.
    assert f1(["yes", "yes", "no", "yes"], golds, flipped) == 0.0


def test_f1_without_positives_is_zero_not_nan():
    assert f1(["no", "no"], _examples(["no", "no"]), BINARY) == 0.0


def test_macro_f1_averages_every_class():
    # entailment 2/4, neutral 2/3, contradiction 0 -> (1/2 + 2/3 + 0) / 3 = 7/18.
    golds = _examples(["entailment", "entailment", "neutral", "contradiction"])
    preds = ["entailment", "neutral", "neutral", "entailment"]
    assert macro_f1(preds, golds, CB_LIKE) == pytest.approx(7 / 18)
    assert macro_f1([e.target for e in golds], golds, CB_LIKE) == pytest.approx(1.0)


def test_matthews_by_hand_and_at_the_extremes():
    golds = _examples(["yes", "yes", "no", "no"])
    # tp 1, fn 1, tn 2, fp 0: (1*2 - 0*1) / sqrt(1 * 2 * 2 * 3) = 2 / sqrt(12).
    assert matthews(["yes", "no", "no", "no"], golds, BINARY) == pytest.approx(2 / math.sqrt(12))
    assert matthews(["yes", "yes", "no", "no"], golds, BINARY) == pytest.approx(1.0)
    assert matthews(["no", "no", "yes", "yes"], golds, BINARY) == pytest.approx(-1.0)


def test_matthews_constant_predictions_or_golds_give_zero():
    assert matthews(["yes"] * 4, _examples(["yes", "yes", "no", "no"]), BINARY) == 0.0
    assert matthews(["yes", "no", "no", "no"], _examples(["no"] * 4), BINARY) == 0.0
    assert matthews([], [], BINARY) == 0.0


def test_pearson_by_hand():
    # dx = (-1, 0, 1), dy = (-4/3, -1/3, 5/3): r = 3 / sqrt(2 * 42/9) = 9 / sqrt(84).
    golds = _examples(["1.0", "2.0", "4.0"])
    assert pearson(["1", "2", "3"], golds, SCORES) == pytest.approx(9 / math.sqrt(84))


def test_pearson_unparsable_prediction_counts_as_zero():
    golds = _examples(["0.0", "2.0", "3.0"])
    assert pearson(["no idea", "2.0", "3.0"], golds, SCORES) == pytest.approx(1.0)


def test_correlations_of_constant_predictions_are_zero():
    golds = _examples(["1.0", "2.0", "4.0"])
    for metric in (pearson, spearman):
        value = metric(["2.4", "2.4", "2.4"], golds, SCORES)
        assert value == 0.0 and not math.isnan(value)
    assert pearson(["1.0"], _examples(["1.0"]), SCORES) == 0.0


def test_spearman_uses_average_ranks_for_ties():
    # Ranks (1.5, 1.5, 3, 4) vs (1, 2, 3, 4): 4.5 / sqrt(4.5 * 5).
    golds = _examples(["1", "2", "3", "4"])
    assert spearman(["1", "1", "2", "3"], golds, SCORES) == pytest.approx(4.5 / math.sqrt(22.5))


def test_spearman_is_one_for_any_increasing_map():
    golds = _examples(["1", "2", "3"])
    assert spearman(["1", "4", "9"], golds, SCORES) == pytest.approx(1.0)
    assert pearson(["1", "4", "9"], golds, SCORES) < 0.99


def test_multirc_groups_answer_options_by_question():
    golds = _examples(["true", "false", "true", "false", "true"], ["q1", "q1", "q2", "q3", "q3"])
    preds = ["true", "false", "false", "true", "true"]
    # q1 all right, q2 wrong, q3 one option wrong.
    assert multirc_em(preds, golds, BINARY) == pytest.approx(1 / 3)
    # Over all options: tp 2, fp 1, fn 1.
    assert multirc_f1a(preds, golds, BINARY) == pytest.approx(2 / 3)


def test_squad_normalisation_drops_case_punctuation_articles_and_spaces():
    assert normalize_answer("  The Eiffel   Tower! ") == "eiffel tower"
    assert normalize_answer("an apple, a pear") == "apple pear"
    assert normalize_answer("Theatre Anthem") == "theatre anthem"  # articles only as words


def test_squad_em_and_f1_take_the_best_reference():
    gold = [Example({"x": "0"}, "Denver Broncos", answers=("Denver Broncos", "the Broncos"))]
    assert squad_em(["broncos."], gold, SCORES) == 1.0
    # "denver" vs "denver broncos": precision 1, recall 1/2.
    assert squad_f1(["Denver"], gold, SCORES) == pytest.approx(2 / 3)


def test_record_max_over_answers_then_mean_over_examples():
    golds = [
        Example({"x": "0"}, "Benazir Bhutto", answers=("Benazir Bhutto", "Bhutto")),
        Example({"x": "1"}, "CNN", answers=("CNN",)),
    ]
    assert record_em(["the Bhutto.", "CNN"], golds, SCORES) == pytest.approx(1.0)
    # "benazir": F1 2/3 against "Benazir Bhutto", 0 against "Bhutto"; second example 0.
    assert record_em(["Benazir", "Pakistan"], golds, SCORES) == 0.0
    assert record_f1(["Benazir", "Pakistan"], golds, SCORES) == pytest.approx((2 / 3 + 0) / 2)


def test_gender_parity_counts_pairs_predicted_alike():
    golds = _examples(["yes"] * 7, ["p0", "p0", "p1", "p1", "p2", "p2", None])
    preds = ["yes", "yes", "yes", "no", "no", "no", "no"]
    assert gender_parity(preds, golds, BINARY) == pytest.approx(2 / 3)
    assert gender_parity(["yes"], _examples(["yes"]), BINARY) == 0.0


def test_compute_metrics_reports_every_metric_in_task_order():
    task = _task(CB_LIKE.verbalizer, ("accuracy", "macro_f1"))
    golds = _examples(["entailment", "neutral"])
    scores = compute_metrics(task, ["entailment", "entailment"], golds)
    assert list(scores) == ["accuracy", "macro_f1"]
    assert scores["accuracy"] == pytest.approx(0.5)
    assert scores["macro_f1"] == pytest.approx((2 / 3 + 0 + 0) / 3)


def test_every_metric_returns_a_number_in_range_on_random_input():
    rng = random.Random(0)
    labels = list(BINARY.labels)
    targets = [rng.choice(labels) for _ in range(50)]
    golds = _examples(targets, [f"g{i // 3}" for i in range(50)])
    preds = [rng.choice(labels) for _ in range(50)]
    for name, metric in METRICS.items():
        value = metric(preds, golds, BINARY)
        assert -1.0 <= value <= 1.0 and not math.isnan(value), name
