"""budget.py, --time-budget and --decay: a duration parses or fails in one line naming the flag;
measured speeds turn into the most steps that fit; a budgeted run stops at its planned step
with a final evaluation, and says so in the log and the output; lr decays as documented."""

from __future__ import annotations

import importlib
import itertools
import json
import math

import pytest

from helpers import cli_loads, learnable_llama, run_cli, toy_rows, toy_task, write_csv
from softprompt.budget import TimeBudget, evaluations, steps_within
from softprompt.config import lr_factor, parse_duration
from softprompt.errors import ConfigError
from softprompt.io import load_prompt
from softprompt.train import TrainConfig, train

train_module = importlib.import_module("softprompt.train")


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("10m", 600), ("1h", 3600), ("1.5h", 5400), (" 2m ", 120)])
def test_durations_parse(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["10", "10 minutes", "0s", "-5m", "m", "1e3s", ""])
def test_a_bad_duration_is_one_line_naming_the_flag(text):
    with pytest.raises(ConfigError) as err:
        TrainConfig(time_budget=text)
    assert "--time-budget" in str(err.value) and "10m" in str(err.value) and "\n" not in str(err.value)


def test_evaluations_count_every_nth_step_and_the_last():
    assert evaluations(5, 100, 100, evaluated=False) == 1
    assert evaluations(5, 150, 100, evaluated=False) == 2  # step 100 and the last
    assert evaluations(5, 5, 100, evaluated=False) == 1  # stopping now still evaluates
    assert evaluations(100, 100, 100, evaluated=True) == 0
    assert evaluations(100, 300, 100, evaluated=True) == 2


def test_speed_turns_into_the_most_steps_that_fit():
    # 1 s/step, 10 s/evaluation every 100 steps: 300 steps cost 300 + 3 * 10 = 330 s.
    assert steps_within(330, 0, 1.0, 10.0, 100, evaluated=False) == 300
    assert steps_within(329, 0, 1.0, 10.0, 100, evaluated=False) == 299  # 299 + 3 evaluations (100, 200, last)
    assert steps_within(600, 0, 0.5, 0.0, 100, evaluated=False) == 1200
    assert steps_within(5, 10, 1.0, 10.0, 100, evaluated=False) == 10  # over budget: stop at once
    assert steps_within(100, 10, 1.0, 0.0, 100, evaluated=True) == 110  # counted from the steps done


def test_time_budget_plans_from_a_stubbed_clock():
    now = [0.0]
    budget = TimeBudget(100.0, eval_every=50, clock=lambda: now[0])
    for seconds in (5.0, 1.0, 1.0):  # the first step (warm-up) is not counted
        budget.record_step(seconds)
    now[0] = 7.0
    # 93 s left at 1 s/step; an evaluation of 32 examples guessed as 0.4 * 32/8 steps = 1.6 s.
    assert budget.plan(3, eval_examples=32, batch_size=8) == 3 + int(93 - 2 * 1.6)
    budget.record_eval(1.0)
    assert budget.plan(3, eval_examples=32, batch_size=8) == 3 + (93 - 2 * 1)


def fake_clock(tick: float):
    counter = itertools.count()
    return lambda: next(counter) * tick


def budget_run(tmp_path, monkeypatch, budget: str, name: str = "out"):
    monkeypatch.setattr(train_module, "_clock", fake_clock(0.1))  # each reading 0.1 s after the last
    cfg = TrainConfig(batch_size=4, prompt_length=4, eval_every=10, time_budget=budget, steps=3)
    out = tmp_path / name
    result = train(learnable_llama(), toy_task(), cfg, out, progress=False)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return result, log, out


def test_a_budgeted_run_stops_at_its_planned_step_with_a_final_evaluation(tmp_path, monkeypatch):
    result, log, out = budget_run(tmp_path, monkeypatch, "6s")
    plans = [r for r in log if "planned_steps" in r]
    assert plans[0]["step"] == 5 and plans[0]["time_budget"] == "6s"
    assert result.budget_steps == plans[-1]["planned_steps"] == result.steps_done
    assert result.steps_done != 3  # --steps is replaced by the budget
    assert [r["step"] for r in log if "loss" in r] == list(range(1, result.steps_done + 1))
    assert [r["step"] for r in log if "eval" in r][-1] == result.steps_done
    assert load_prompt(out / "checkpoint" / "prompt").training["steps"] == result.steps_done
    assert result.best.training["time_budget"] == "6s"
    longer, _, _ = budget_run(tmp_path, monkeypatch, "12s", "longer")
    assert longer.steps_done > result.steps_done


def test_cli_prints_the_steps_the_budget_set(tmp_path, monkeypatch, capsys):
    cli_loads(monkeypatch, learnable_llama())
    monkeypatch.setattr(train_module, "_clock", fake_clock(0.1))
    train_csv = write_csv(tmp_path / "train.csv", toy_rows(40, seed=0))
    dev_csv = write_csv(tmp_path / "dev.csv", toy_rows(16, seed=1))
    args = ["train", "--task", "toy", "--train-file", train_csv, "--dev-file", dev_csv, "--text-field", "sentence"]
    args += ["--labels", "neg=negative,pos=positive", "--template", "{sentence}", "--batch-size", "4"]
    code, out, err = run_cli(capsys, *args, "--time-budget", "4s", "--eval-every", "10", "--out", tmp_path / "run")
    assert code == 0, err
    assert "steps set by --time-budget 4s" in out
    code, _, err = run_cli(capsys, *args, "--time-budget", "ten minutes", "--out", tmp_path / "bad")
    assert code == 2 and "--time-budget" in err and not (tmp_path / "bad").exists()


def test_lr_decay_shapes():
    assert [lr_factor(s, 2, 10, "constant") for s in range(4)] == [1 / 3, 2 / 3, 1.0, 1.0]
    linear = [lr_factor(s, 0, 10, "linear") for s in range(10)]
    assert linear[0] == 1.0 and linear[-1] == pytest.approx(0.1) and all(a > b for a, b in zip(linear, linear[1:]))
    cosine = [lr_factor(s, 0, 10, "cosine") for s in range(10)]
    assert cosine[0] == 1.0 and cosine[5] == pytest.approx(0.5)
    assert cosine[-1] == pytest.approx(0.5 * (1 + math.cos(0.9 * math.pi)))
    assert lr_factor(1, 2, 10, "cosine") == pytest.approx(2 / 3)  # warm-up first


def test_a_decaying_run_logs_a_falling_lr_and_refuses_another_decay_on_resume(tmp_path):
    cfg = TrainConfig(steps=6, batch_size=4, prompt_length=4, decay="linear", eval_every=100)
    train(learnable_llama(), toy_task(), cfg, tmp_path / "out", progress=False)
    log = (tmp_path / "out" / "log.jsonl").read_text().splitlines()
    lrs = [json.loads(line)["lr"] for line in log if '"lr"' in line]
    # The log holds the lr of the next step: every step trained with a positive lr, 0 comes after the last.
    assert all(a > b for a, b in zip(lrs, lrs[1:])) and lrs[-2] > 0 and lrs[-1] == 0
    with pytest.raises(ConfigError, match="--decay"):
        changed = TrainConfig(steps=8, batch_size=4, prompt_length=4, decay="cosine", eval_every=100)
        train(learnable_llama(), toy_task(), changed, tmp_path / "out", resume=True, progress=False)
