"""Did a source learn its task (spot/chance.py), and retrieval that ranks the ones that did not last:
the constant baseline and the z rule against hand-computed values, the build recording it, the
`library baselines` backfill, and the learned-first order in `transfer.retrieve` and the study."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import cli_loads, learnable_llama, run_cli, toy_task

from softprompt.config import SpotConfig
from softprompt.io import SavedPrompt, save_prompt
from softprompt.spot import chance, library
from softprompt.spot.study import StudyReport
from softprompt.spot.transfer import retrieve
from softprompt.tasks.base import Example, Task, register
from softprompt.tasks.metrics import compute_metrics

for _name in ("chance_a", "chance_b"):
    register(_name)(lambda n=_name: toy_task(24, 8, name=n))


def three_way(golds: list[str]) -> tuple[Task, list[Example]]:
    task = Task(
        name="three", template="{s}", verbalizer={"a": "A", "b": "B", "c": "C"}, metrics=("accuracy", "matthews"),
        loader=lambda split: [],
    )  # fmt: skip
    return task, [Example({"s": str(i)}, g) for i, g in enumerate(golds)]


def test_constant_baseline_is_the_best_blind_answer_per_metric():
    task, dev = three_way(["a", "a", "a", "b", "b", "c", "a", "c", "b", "a"])  # a: 5 of 10
    assert chance.constant_scores(task, dev) == {"accuracy": 0.5, "matthews": 0.0}
    # Per-example choices (WSC-like): "always the first" and "always the second" are the sheets.
    picks = Task(name="p", template="{s}", verbalizer=None, metrics=("accuracy",), loader=lambda split: [])
    dev = [Example({"s": "x"}, g, choices=("u", "v")) for g in ("u", "v", "v", "v")]
    assert chance.constant_scores(picks, dev) == {"accuracy": 0.75}
    # Generation: the sample's most common reference, given to every question, after SQuAD normalisation.
    qa = Task(name="q", template="{s}", verbalizer=None, metrics=("squad_em", "squad_f1"), loader=lambda split: [])
    dev = [Example({"s": str(i)}, t, answers=a) for i, (t, a) in
           enumerate([("Paris", ("Paris", "paris")), ("the Paris", ()), ("1990", ()), ("Rome", ())])]  # fmt: skip
    scores = chance.constant_scores(qa, dev)
    assert scores["squad_em"] == pytest.approx(0.5)  # "paris" matches "Paris" and "the Paris"
    assert scores == compute_metrics(qa, ["paris"] * 4, dev)


def test_z_rule_against_hand_computed_values():
    # 60 % on 200 against a 50 % majority: (0.6 - 0.5) / sqrt(0.25 / 200) = 2.83 > 1.645.
    assert chance.z_score("accuracy", 0.6, 0.5, 200) == pytest.approx(0.1 / math.sqrt(0.25 / 200))
    # A correlation against 0: r sqrt(n).
    assert chance.z_score("matthews", 0.15, 0.0, 100) == pytest.approx(1.5)
    # A baseline of 0 is kept 1/n away from 0 (one exact match in 100 is not infinitely many SEs).
    assert chance.z_score("squad_em", 0.01, 0.0, 100) == pytest.approx(0.01 / math.sqrt(0.01 * 0.99 / 100))
    base = {"metrics": {"accuracy": 0.5}, "examples": {"t": 200}}
    assert chance.verdict({"accuracy": 0.6}, {"t": "accuracy"}, base)["learned"] is True
    assert chance.verdict({"accuracy": 0.55}, {"t": "accuracy"}, base)["learned"] is False  # z 1.41
    assert chance.verdict({"f1": 0.9}, {"t": "accuracy"}, base)["learned"] is None  # nothing to compare
    # A mixture learned if one member did, read from its "task/metric" keys.
    mixed = {"metrics": {"x/accuracy": 0.5, "y/matthews": 0.0}, "examples": {"x": 100, "y": 100}}
    found = chance.verdict({"x/accuracy": 0.5, "y/matthews": 0.2}, {"x": "accuracy", "y": "matthews"}, mixed)
    assert found["learned"] is True and found["by"] == pytest.approx({"x": 0.0, "y": 2.0})


@pytest.fixture
def model(monkeypatch):
    return cli_loads(monkeypatch, learnable_llama())


BUDGET = ("--steps", "6", "--eval-every", "2", "--patience", "1", "--batch-size", "8", "--prompt-length", "4",
          "--embed-step", "2", "--max-eval", "6", "--optimizer", "adamw", "--lr", "0.5")  # fmt: skip


def test_build_records_chance_and_baselines_backfills_it(model, tmp_path, capsys):
    lib = tmp_path / "lib"
    code, _, err = run_cli(
        capsys, "library", "build", "--library", lib, "--sources", "chance_a,chance_a+chance_b", "--out",
        tmp_path / "work", *BUDGET,
    )  # fmt: skip
    assert code == 0, err
    single, mixed = library.get(lib, "chance_a"), library.get(lib, "chance_a+chance_b")
    dev = toy_task(24, 8).load("dev")  # the build's dev sample: 6 of these 8, seeded
    assert single.meta["chance"]["examples"] == {"chance_a": 6} and single.meta["chance"]["max_eval"] == 6
    majority = single.meta["chance"]["metrics"]["accuracy"]
    assert 0.5 <= majority <= 4 / 6 and len(dev) == 8
    z = chance.z_score("accuracy", single.meta["metrics"]["accuracy"], majority, 6)
    assert single.meta["chance"]["z"] == pytest.approx(z) and single.learned == (z >= 1.6448536269514722)
    assert set(mixed.meta["chance"]["metrics"]) == {"chance_a/accuracy", "chance_b/accuracy"}
    # An entry from before: no "chance"; the backfill computes the same record from the data.
    library.update_meta(single, chance=None)
    assert library.get(lib, "chance_a").learned is None
    code, out, err = run_cli(capsys, "library", "baselines", "--library", lib)
    assert code == 0, err
    assert library.get(lib, "chance_a").meta["chance"] == single.meta["chance"]
    assert "chance_a " in out and "added" in out and "kept" in out  # the mixture had one already
    code, out, _ = run_cli(capsys, "library", "list", "--library", lib)
    assert ("learned its task" in out) or ("not above its constant baseline" in out)


def test_retrieval_ranks_sources_at_chance_last(model, tmp_path):
    """Two entries with hand-set embeddings and verdicts: the nearer one did not learn its task."""
    lib = tmp_path / "lib"
    run_dir = tmp_path / "runs"
    hidden = model.model.config.hidden_size
    target = torch.zeros(2, hidden)
    target[:, 0] = 1.0
    made = {}
    for name, direction, learned in (("near", 0, False), ("far", 1, True)):
        weight = torch.zeros(2, hidden)
        weight[:, 0] = 1.0
        weight[:, 1] = 0.2 if direction == 0 else 3.0
        folder = run_dir / name
        base = load_prompt_like(model, weight, name)
        save_prompt(folder / "best", base)
        entry = library.add(lib, folder, name)
        made[name] = library.update_meta(entry, chance={"learned": learned})
    save_prompt(tmp_path / "target", load_prompt_like(model, target, "t"))
    by_similarity = [n for n, _ in retrieve(model, tmp_path / "target", lib, learned_first=False)]
    learned_first = [n for n, _ in retrieve(model, tmp_path / "target", lib)]
    assert by_similarity == ["near", "far"] and learned_first == ["far", "near"]
    library.update_meta(made["near"], chance=None)  # unknown counts as learned: similarity decides
    assert [n for n, _ in retrieve(model, tmp_path / "target", lib)] == ["near", "far"]


def load_prompt_like(model, weight: torch.Tensor, task: str):
    """A SavedPrompt for `model` holding `weight` (a hand-made task embedding)."""
    return SavedPrompt(weight=weight, model=model.identity, task={"name": task}, training={}, metrics={})


def test_study_retrieval_puts_sources_at_chance_last_and_shows_both_orders():
    sims = {"t": {"a": {"avg_cosine": 0.9, "per_token_cosine": 0.1},
                  "b": {"avg_cosine": 0.5, "per_token_cosine": 0.2},
                  "c": {"avg_cosine": 0.1, "per_token_cosine": 0.3}}}  # fmt: skip
    scores = {"t": {"vocab": [0.5, 0.5], "a": [0.4, 0.4], "b": [0.6, 0.7], "c": [0.8, 0.8]}}
    report = StudyReport(["t"], {"t": "accuracy"}, [0, 1], scores, {"t": ["a", "b", "c"]}, sims, 1,
                         SpotConfig(), at_chance=["a"])  # fmt: skip
    assert report.ranked("t", "avg_cosine") == ["b", "c", "a"]
    assert report.ranked("t", "avg_cosine", learned_first=False) == ["a", "b", "c"]
    assert report.retrieved("t") == "b"
    rows = {r["method"]: r["per_target"]["t"] for r in report.retrieval()}
    assert rows["avg_cosine, learned first, best of top-1"] == pytest.approx(65.0)
    assert rows["avg_cosine best of top-1"] == pytest.approx(40.0)
    assert "did not beat their dev sample's constant baseline" in report.markdown()
    again = StudyReport.from_dict(json.loads(json.dumps(report.to_dict())))
    assert again.at_chance == ["a"] and again.spot.learned_first and again.retrieved("t") == "b"
    # A study.json from before learned-first ranked by similarity alone, and still reads so.
    old = report.to_dict()
    del old["learned_first"], old["at_chance"]
    assert StudyReport.from_dict(old).retrieved("t") == "a"
