"""truncate.py and Encoder.task_input_ids: a long input is shortened in its fields only, so the
template's text (the label cue after the input) survives; head, tail and head+tail keep the
right tokens; inputs that fit are tokenised exactly as before; the setting is part of a run."""

from __future__ import annotations

import pytest

from helpers import tiny_llama, toy_task
from softprompt.batching import Encoder
from softprompt.errors import ConfigError
from softprompt.tasks.base import Example, Task
from softprompt.train import TrainConfig, train
from softprompt.truncate import budgets, cut_ids, kept_spans

WORDS = [chr(97 + i // 10) + str(i % 10) for i in range(100)]  # a0 a1 ... j9: 2 tokens each, all distinct
LONG = " ".join(WORDS)


def review_task(template: str = "review: {text} sentiment:") -> Task:
    return Task(
        name="rev", template=template, verbalizer={"0": "negative", "1": "positive"}, metrics=("accuracy",), loader=None
    )


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_llama().tokenizer


def text_of(tokenizer, ids) -> str:
    return tokenizer.decode(ids).replace(" ", "")


@pytest.mark.parametrize("strategy", ["head", "tail", "head+tail"])
def test_a_long_input_keeps_the_template_and_its_label_cue(tokenizer, strategy):
    enc = Encoder(tokenizer, False, max_input_tokens=60, truncation=strategy)
    ids = enc.task_input_ids(review_task(), Example({"text": LONG}, "1"))
    cue = tokenizer(" sentiment:", add_special_tokens=False)["input_ids"]
    start = tokenizer("review:", add_special_tokens=False)["input_ids"]
    assert 55 <= len(ids) <= 60
    assert ids[-len(cue) :] == cue and ids[: len(start)] == start


def test_head_tail_and_head_plus_tail_keep_the_right_words(tokenizer):
    task = review_task("{text} sentiment:")
    kept, cue = {}, len(tokenizer(" sentiment:", add_special_tokens=False)["input_ids"])
    for strategy in ("head", "tail", "head+tail"):
        enc = Encoder(tokenizer, False, max_input_tokens=40 + cue, truncation=strategy)  # 40 tokens: 20 words
        body = text_of(tokenizer, enc.task_input_ids(task, Example({"text": LONG}, "1"))).removesuffix("sentiment:")
        kept[strategy] = body
    assert kept["head"] == "".join(WORDS[:20])
    assert kept["tail"] == "".join(WORDS[-20:])
    assert kept["head+tail"] == "".join(WORDS[:5] + WORDS[-15:])  # a quarter head, three quarters tail


def test_an_input_that_fits_is_tokenised_whole(tokenizer):
    enc = Encoder(tokenizer, False, max_input_tokens=256)
    example = Example({"text": "the movie was great"}, "1")
    task = review_task()
    assert enc.task_input_ids(task, example) == tokenizer(task.format(example), add_special_tokens=False)["input_ids"]


def test_with_two_fields_the_long_one_is_cut_and_the_short_one_kept(tokenizer):
    task = Task(
        name="nli",
        template="premise: {premise} hypothesis: {hypothesis} answer:",
        verbalizer={"0": "yes", "1": "no"},
        metrics=("accuracy",),
        loader=None,
    )
    enc = Encoder(tokenizer, False, max_input_tokens=50, truncation="tail")
    ids = enc.task_input_ids(task, Example({"premise": LONG, "hypothesis": "the movie was great"}, "0"))
    text = tokenizer.decode(ids)
    assert len(ids) <= 50
    assert text.replace(" ", "").endswith("hypothesis:themoviewasgreatanswer:")
    assert text.replace(" ", "").startswith("premise:")


def test_a_template_longer_than_the_budget_is_cut_as_a_whole(tokenizer):
    enc = Encoder(tokenizer, False, max_input_tokens=5, truncation="tail")
    ids = enc.task_input_ids(review_task(), Example({"text": LONG}, "1"))
    assert len(ids) == 5 and text_of(tokenizer, ids).endswith("sentiment:"[-3:])


def test_budgets_take_from_the_longest_fields_first():
    assert budgets({"a": 100, "b": 10}, 50) == {"a": 40, "b": 10}
    assert budgets({"a": 30, "b": 30}, 40) == {"a": 20, "b": 20}
    assert budgets({"a": 5, "b": 5}, 20) == {"a": 5, "b": 5}
    assert budgets({"a": 5, "b": 5}, 0) == {"a": 0, "b": 0}


def test_kept_spans_and_cut_ids():
    assert kept_spans(10, 4, "head") == [(0, 4)]
    assert kept_spans(10, 4, "tail") == [(6, 10)]
    assert kept_spans(10, 4, "head+tail") == [(0, 1), (7, 10)]
    assert kept_spans(10, 20, "head+tail") == [(0, 10)]
    assert cut_ids(list(range(10)), 4, "head+tail") == [0, 7, 8, 9]


def test_truncation_is_recorded_and_resume_refuses_a_change(tmp_path):
    cfg = TrainConfig(steps=1, batch_size=4, prompt_length=4, truncation="tail", max_input_tokens=8)
    result = train(tiny_llama(), toy_task(), cfg, tmp_path / "out", progress=False)
    assert result.best.training["truncation"] == "tail" and result.best.training["max_input_tokens"] == 8
    with pytest.raises(ConfigError, match="--truncation 'tail'") as err:
        changed = TrainConfig(steps=2, batch_size=4, prompt_length=4, truncation="head", max_input_tokens=8)
        train(tiny_llama(), toy_task(), changed, tmp_path / "out", resume=True, progress=False)
    assert "\n" not in str(err.value)


def test_a_bad_truncation_names_the_flag():
    with pytest.raises(ConfigError, match="--truncation 'middle'"):
        TrainConfig(truncation="middle")
