"""SPoT: similarity measures, mixtures, the prompt library, transfer and the transfer grid,
on tiny models and in-memory tasks (registered below under spot_* names)."""

from __future__ import annotations

import json
import math
import random
from collections import Counter

import pytest
import torch
from helpers import cli_loads, learnable_llama, run_cli, tiny_llama, toy_examples, toy_task

from softprompt.batching import bucketed_batches
from softprompt.config import embed_step_for
from softprompt.errors import ConfigError
from softprompt.io import load_prompt
from softprompt.spot import library
from softprompt.spot.matrix import MatrixReport
from softprompt.tasks.metrics import average_ranks, pearson_r, spearman_r
from softprompt.batching import mixture_batches
from softprompt.tasks.mixture import Mixture, mixing_rates
from softprompt.spot.similarity import avg_cosine, per_token_cosine, rank
from softprompt.spot.transfer import TransferReport
from softprompt.tasks.base import Task, register
from softprompt.train import TrainConfig, train

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def yes_no_task(name: str) -> Task:
    """The toy data under another template and verbalizer (great -> yes)."""
    splits = {"train": toy_examples(24, seed=2), "dev": toy_examples(8, seed=3)}
    return Task(
        name=name,
        template="is it good ? {sentence}",
        verbalizer={"neg": "no", "pos": "yes"},
        metrics=("accuracy",),
        loader=lambda split: list(splits[split]),
    )


for _name in ("spot_a", "spot_b", "spot_target"):
    register(_name)(lambda n=_name: toy_task(24, 8, name=n))
register("spot_yes")(lambda: yes_no_task("spot_yes"))


# -- similarity ---------------------------------------------------------------------------


def test_similarity_measures_match_hand_computed_values():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert avg_cosine(a, b) == pytest.approx(1 / math.sqrt(2))  # cos([.5, .5], [1, 0])
    assert per_token_cosine(a, b) == pytest.approx(0.5)  # (1 + 1 + 0 + 0) / 4
    c = torch.tensor([[3.0, 4.0]])
    d = torch.tensor([[4.0, 3.0], [0.0, -5.0]])  # prompts of different lengths compare fine
    assert per_token_cosine(c, d) == pytest.approx((24 / 25 - 20 / 25) / 2)
    assert avg_cosine(c, d) == pytest.approx(2 / (5 * math.sqrt(5)))  # cos([3, 4], [2, -1])
    assert avg_cosine(a, a) == pytest.approx(1.0) and per_token_cosine(a, -a) == pytest.approx(-0.5)


def test_rank_puts_the_most_similar_source_first():
    target = torch.tensor([[1.0, 0.1]])
    ranked = rank(target, [("far", torch.tensor([[-1.0, 0.0]])), ("near", torch.tensor([[1.0, 0.0]]))])
    assert [name for name, _ in ranked] == ["near", "far"]
    assert set(ranked[0][1]) == {"avg_cosine", "per_token_cosine"}
    with pytest.raises(ConfigError, match="measure"):
        rank(target, [], by="euclid")
    with pytest.raises(ConfigError, match="hidden"):
        avg_cosine(torch.zeros(2, 3), torch.zeros(2, 4))


# -- mixtures -----------------------------------------------------------------------------


def test_examples_proportional_mixing_with_a_cap():
    assert mixing_rates([1000, 100], 500) == pytest.approx([5 / 6, 1 / 6])
    assert mixing_rates([1000, 100], None) == pytest.approx([10 / 11, 1 / 11])
    lengths = [[5 + i % 7 for i in range(1000)], [3 + i % 5 for i in range(100)]]
    stream = mixture_batches(lengths, 500, batch_size=10, rng=random.Random(0))
    drawn = [i for _ in range(1200) for i in next(stream)]  # 12,000 draws = 20 rounds of 600
    per_task = Counter(i >= 1000 for i in drawn)
    assert per_task[False] / per_task[True] == pytest.approx(5.0, rel=0.05)
    first_round = drawn[:600]
    assert len(set(first_round)) == 600  # no repeats within a round
    assert len({i for i in drawn if i < 1000}) > 500  # capped task: fresh examples each round


def test_an_uncapped_mixture_stream_is_plain_bucketing():
    lengths = [[3, 9, 4, 7, 5, 8, 2, 6], [1, 5, 2]]
    flat = lengths[0] + lengths[1]
    ours = mixture_batches(lengths, None, 4, random.Random(3))
    plain = bucketed_batches(flat, 4, random.Random(3))
    assert [next(ours) for _ in range(20)] == [next(plain) for _ in range(20)]
    capped_above_sizes = mixture_batches(lengths, 100, 4, random.Random(3))
    plain = bucketed_batches(flat, 4, random.Random(3))
    assert [next(capped_above_sizes) for _ in range(5)] == [next(plain) for _ in range(5)]


def test_mixture_rejects_bad_settings():
    with pytest.raises(ConfigError, match="at least two"):
        Mixture((toy_task(),))
    with pytest.raises(ConfigError, match="twice"):
        Mixture((toy_task(), toy_task()))
    with pytest.raises(ConfigError, match="mixture-cap"):
        Mixture((toy_task(name="a"), toy_task(name="b")), cap=0)


def test_mixture_training_uses_each_tasks_template_and_verbalizer(tmp_path, monkeypatch):
    from softprompt.batching import Encoder

    seen = []
    encode = Encoder.encode

    def spy(self, task, example):
        seen.append((task.name, task.format(example).split()[0], task.target_text(example)))
        return encode(self, task, example)

    monkeypatch.setattr(Encoder, "encode", spy)
    mixture = Mixture((toy_task(40, 16, name="spot_a"), yes_no_task("spot_yes")), cap=30)
    cfg = TrainConfig(steps=6, batch_size=8, prompt_length=4, eval_every=3, embed_step=2, optimizer="adamw")
    result = train(learnable_llama(), mixture, cfg, tmp_path / "mix", progress=False)
    assert {(n, first) for n, first, _ in seen} == {("spot_a", "sst2"), ("spot_yes", "is")}
    assert {t for n, _, t in seen if n == "spot_a"} == {"negative", "positive"}
    assert {t for n, _, t in seen if n == "spot_yes"} == {"no", "yes"}
    assert Counter(n for n, _, _ in seen) == {"spot_a": 40, "spot_yes": 24}
    evals = [json.loads(l) for l in (tmp_path / "mix/log.jsonl").read_text().splitlines() if "eval" in l]
    metrics = evals[-1]["eval"]
    assert set(metrics) == {"mean", "spot_a/accuracy", "spot_yes/accuracy"}
    assert metrics["mean"] == pytest.approx((metrics["spot_a/accuracy"] + metrics["spot_yes/accuracy"]) / 2)
    assert evals[-1]["dev_examples"] == 16 + 8
    assert result.best.task["name"] == "spot_a+spot_yes" and result.best.task["mixture_cap"] == 30
    assert [t["name"] for t in result.best.task["mixture"]] == ["spot_a", "spot_yes"]
    embedding = load_prompt(tmp_path / "mix/embedding")
    assert embedding.metrics == {"step": 2} and embedding.weight.shape == (4, 32)


def test_embed_step_after_the_last_step_is_refused():
    with pytest.raises(ConfigError, match="embed-step"):
        TrainConfig(steps=5, embed_step=6)


def test_default_embed_step_is_ten_steps_worth_of_lr_after_a_warm_up():
    assert embed_step_for(1000) == 10 and embed_step_for(6) == 6  # no warm-up; a shorter run: its last step
    # 50-step warm-up: step n trains at n/51 of the lr; summed, 31 steps give 31*32/102 = 9.73 and 32
    # steps 10.35, so 31 is the nearest to 10 full-lr steps.
    assert embed_step_for(1000, None, 50) == 31
    assert embed_step_for(1000, 4, 50) == 4  # given: as given


def test_train_writes_the_embedding_at_the_warm_up_aware_step(tmp_path):
    # warm-up 2: factors 1/3, 2/3, then 1: 1 after two steps, 10 after 11.
    cfg = TrainConfig(steps=12, batch_size=4, prompt_length=4, eval_every=100, warmup_steps=2)
    train(tiny_llama(), toy_task(), cfg, tmp_path / "run", progress=False)
    assert load_prompt(tmp_path / "run" / "embedding").metrics == {"step": 11}


# -- CLI helpers --------------------------------------------------------------------------


@pytest.fixture
def model(monkeypatch):
    return cli_loads(monkeypatch, learnable_llama())


def one_line_error(code, err, *needles):
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


TINY = ("--steps", "4", "--batch-size", "8", "--prompt-length", "4", "--eval-every", "2", "--embed-step", "2")


@pytest.fixture
def source_run(model, tmp_path, capsys):
    code, out, err = run_cli(capsys, "train", "--task", "spot_a", "--out", tmp_path / "src", *TINY)
    assert code == 0, err
    assert (tmp_path / "src/embedding/prompt.safetensors").is_file()
    return tmp_path / "src"


def test_train_a_mixture_from_the_command_line(model, tmp_path, capsys):
    code, out, err = run_cli(
        capsys,
        "train",
        "--task",
        "cb,rte",
        "--mixture-cap",
        "8",
        "--max-train",
        "16",
        "--max-eval",
        "4",
        "--out",
        tmp_path / "mix",
        *TINY,
    )
    assert code == 0, err
    assert out.splitlines()[-1].startswith("cb+rte dev mean ")
    saved = load_prompt(tmp_path / "mix/best")
    assert saved.task["mixture_cap"] == 8 and saved.training["train_examples"] == 32
    code, _, err = run_cli(capsys, "train", "--task", "cb", "--mixture-cap", "8", "--out", tmp_path / "x", *TINY)
    one_line_error(code, err, "--mixture-cap")
    code, _, err = run_cli(capsys, "train", "--task", "cb,no_such_task", "--out", tmp_path / "x", *TINY)
    one_line_error(code, err, "no_such_task")
    assert not (tmp_path / "x").exists()


# -- library ------------------------------------------------------------------------------


def test_library_add_list_remove(source_run, tmp_path, capsys):
    lib = tmp_path / "lib"
    code, out, err = run_cli(capsys, "library", "add", source_run, "--library", lib)
    assert code == 0, err
    assert "added spot_a" in out
    assert sorted(p.name for p in (lib / "spot_a").iterdir()) == ["best", "embedding", "entry.json"]
    meta = json.loads((lib / "spot_a/entry.json").read_text())
    assert meta["task"] == "spot_a" and meta["has_embedding"] and meta["embed_step"] == 2
    assert meta["model"]["name"] == "tiny-llama-0" and "accuracy" in meta["metrics"]
    code, _, _ = run_cli(capsys, "library", "add", source_run / "best", "--library", lib, "--name", "bare")
    assert code == 0
    assert [(e.name, e.prompt_dir) for e in library.entries(lib)] == [
        ("bare", lib / "bare/best"),
        ("spot_a", lib / "spot_a/best"),
    ]
    assert library.get(lib, "bare").embedding_dir == lib / "bare/best"  # no embedding/: best/ stands in
    code, out, _ = run_cli(capsys, "library", "list", "--library", lib)
    assert code == 0 and [l.split()[0] for l in out.splitlines()] == ["bare", "spot_a"]
    assert "embedding@2" in out and "no embedding" in out
    code, out, _ = run_cli(capsys, "library", "remove", "bare", "--library", lib)
    assert code == 0 and [e.name for e in library.entries(lib)] == ["spot_a"]


def test_library_bad_input_is_one_line(source_run, tmp_path, capsys):
    lib = tmp_path / "lib"
    assert run_cli(capsys, "library", "add", source_run, "--library", lib)[0] == 0
    code, _, err = run_cli(capsys, "library", "add", source_run, "--library", lib)
    one_line_error(code, err, "spot_a", "--overwrite")
    assert run_cli(capsys, "library", "add", source_run, "--library", lib, "--overwrite")[0] == 0
    code, _, err = run_cli(capsys, "library", "add", tmp_path / "nothing-here", "--library", lib)
    one_line_error(code, err, "nothing-here")
    code, _, err = run_cli(capsys, "library", "add", source_run, "--library", lib, "--name", "../evil")
    one_line_error(code, err, "--name")
    code, _, err = run_cli(capsys, "library", "remove", "nope", "--library", lib)
    one_line_error(code, err, "nope", "spot_a")
    code, _, err = run_cli(capsys, "library", "list", "--library", tmp_path / "missing")
    one_line_error(code, err, "missing")
    assert library.entries(tmp_path / "missing", must_exist=False) == []


# -- transfer -----------------------------------------------------------------------------


def test_transfer_trains_from_source_and_baseline_with_the_same_seeds(source_run, tmp_path, capsys):
    out = tmp_path / "transfer"
    code, text, err = run_cli(
        capsys, "transfer", "--task", "spot_target", "--source", source_run, "--seeds", "0,1", "--out", out, *TINY
    )
    assert code == 0, err
    for init in ("baseline", "from-src"):
        for seed in (0, 1):
            run_dir = out / init / f"seed{seed}"
            saved = load_prompt(run_dir / "best")
            assert saved.training["seed"] == seed and saved.training["steps"] == 4
            assert saved.training["init"] == ("vocab" if init == "baseline" else "file")
    report = json.loads((out / "transfer.json").read_text())
    assert report["seeds"] == [0, 1] and len(report["baseline"]) == 2 and list(report["sources"]) == ["src"]
    expected = sum(report["sources"]["src"]) / 2 - sum(report["baseline"]) / 2
    assert report["best_source"] == "src" and report["gain"] == pytest.approx(expected)
    assert "vocab (baseline)" in text and "from src" in text and "±" in text and "best source on dev: src" in text
    # A finished grid is reused, not retrained.
    stamp = (out / "baseline/seed0/best/prompt.safetensors").stat().st_mtime_ns
    assert (
        run_cli(
            capsys, "transfer", "--task", "spot_target", "--source", source_run, "--seeds", "0,1", "--out", out, *TINY
        )[0]
        == 0
    )
    assert (out / "baseline/seed0/best/prompt.safetensors").stat().st_mtime_ns == stamp


def test_transfer_auto_retrieves_from_the_library_and_similar_ranks_it(source_run, model, tmp_path, capsys):
    lib = tmp_path / "lib"
    run_cli(capsys, "library", "add", source_run, "--library", lib)
    other = tmp_path / "other"
    assert run_cli(capsys, "train", "--task", "spot_yes", "--out", other, *TINY)[0] == 0
    run_cli(capsys, "library", "add", other, "--library", lib)
    code, text, err = run_cli(
        capsys,
        "similar",
        "--task",
        "spot_target",
        "--library",
        lib,
        "--embed-step",
        "2",
        "--prompt-length",
        "4",
        "--batch-size",
        "8",
    )
    assert code == 0, err
    rows = [l.split() for l in text.splitlines()[2:]]
    assert sorted(r[1] for r in rows) == ["spot_a", "spot_yes"] and [r[0] for r in rows] == ["1", "2"]
    assert float(rows[0][2]) >= float(rows[1][2])
    code, text, err = run_cli(
        capsys,
        "transfer",
        "--task",
        "spot_target",
        "--library",
        lib,
        "--auto",
        "--top-k",
        "1",
        "--seeds",
        "0",
        "--out",
        tmp_path / "auto",
        *TINY,
    )
    assert code == 0, err
    report = json.loads((tmp_path / "auto/transfer.json").read_text())
    assert len(report["retrieved"]) == 2 and list(report["sources"]) == [report["retrieved"][0][0]]
    assert "retrieved by avg_cosine" in text


def test_transfer_bad_input_is_one_line(model, source_run, tmp_path, capsys):
    cases = [
        (("--source", source_run, "--seeds", "0,x"), "--seeds"),
        (("--seeds", "0"), "--source"),
        (("--auto",), "--library"),
        (("--source", tmp_path / "nope"), "nope"),
        (("--source", source_run, "--measure", "l2"), "--measure"),
    ]
    for extra, needle in cases:
        code, _, err = run_cli(capsys, "transfer", "--task", "spot_target", "--out", tmp_path / "t", *TINY, *extra)
        one_line_error(code, err, needle)
    assert not (tmp_path / "t").exists()


# -- transfer grid ------------------------------------------------------------------------


def test_transfer_matrix_writes_heatmap_tables_and_fills_the_library(model, tmp_path, capsys):
    out, lib = tmp_path / "grid", tmp_path / "lib"
    args = (
        "transfer-matrix",
        "--sources",
        "spot_a,spot_yes,spot_a+spot_yes",
        "--targets",
        "spot_target,spot_b",
        "--library",
        lib,
        "--out",
        out,
        "--seeds",
        "0",
        *TINY,
    )
    code, text, err = run_cli(capsys, *args)
    assert code == 0, err
    assert (out / "heatmap.png").read_bytes()[:8] == PNG_MAGIC and (out / "heatmap.png").stat().st_size > 5000
    report = json.loads((out / "matrix.json").read_text())
    assert report["sources"] == ["spot_a", "spot_yes", "spot_a+spot_yes"]
    assert set(report["relative_gain"]) == {"spot_target", "spot_b"}
    assert set(report["correlation"]["spot_b"]) == {"avg_cosine", "per_token_cosine"}
    methods = [r["method"] for r in report["retrieval"]]
    assert (
        methods[:2] == ["baseline", "oracle"]
        and "avg_cosine best of top-1" in methods
        and "per_token_cosine best of top-3" in methods
    )
    oracle = next(r for r in report["retrieval"] if r["method"] == "oracle")
    assert all(oracle["score"] >= r["score"] - 1e-9 for r in report["retrieval"][2:])
    md = (out / "matrix.md").read_text()
    assert "Spearman" in md and "best of top-1" in md and md.strip() in text
    assert [e.name for e in library.entries(lib)] == ["spot_a", "spot_a+spot_yes", "spot_yes"]
    assert load_prompt(lib / "spot_a+spot_yes/best").task["mixture"][1]["name"] == "spot_yes"
    # Again into a new folder: every source comes from the library, none is retrained.
    code, _, err = run_cli(capsys, *args[: -len(TINY) - 4], "--out", tmp_path / "grid2", "--seeds", "0", *TINY)
    assert code == 0, err
    assert not (tmp_path / "grid2/sources").exists() and (tmp_path / "grid2/heatmap.png").is_file()


def test_retrieval_table_and_correlations_on_hand_made_scores():
    def report(base, by_source):
        return TransferReport("t", "accuracy", [0], 10, "vocab", [base], {s: [v] for s, v in by_source.items()})

    sims = {
        "t1": {
            "a": {"avg_cosine": 0.9, "per_token_cosine": 0.1},
            "b": {"avg_cosine": 0.5, "per_token_cosine": 0.2},
            "c": {"avg_cosine": 0.1, "per_token_cosine": 0.3},
        },
        "t2": {
            "a": {"avg_cosine": 0.2, "per_token_cosine": 0.3},
            "b": {"avg_cosine": 0.8, "per_token_cosine": 0.2},
            "c": {"avg_cosine": 0.4, "per_token_cosine": 0.1},
        },
    }
    grid = MatrixReport(
        ["a", "b", "c"],
        ["t1", "t2"],
        {"t1": report(0.5, {"a": 0.6, "b": 0.55, "c": 0.4}), "t2": report(0.4, {"a": 0.5, "b": 0.3, "c": 0.2})},
        sims,
    )
    assert grid.relative_gain("t1", "a") == pytest.approx(20.0)
    rows = {r["method"]: r for r in grid.retrieval()}
    assert rows["baseline"]["score"] == pytest.approx(45.0)
    assert rows["oracle"]["score"] == pytest.approx(55.0) and rows["oracle"]["change"] == pytest.approx((20 + 25) / 2)
    assert rows["avg_cosine best of top-1"]["per_target"] == pytest.approx({"t1": 60.0, "t2": 30.0})
    assert rows["avg_cosine best of top-3"]["score"] == pytest.approx(55.0)
    corr = grid.correlations()
    assert corr["t1"]["avg_cosine"]["spearman"] == pytest.approx(1.0)  # sims a > b > c, gains a > b > c
    assert corr["t1"]["per_token_cosine"]["spearman"] == pytest.approx(-1.0)
    assert average_ranks([3.0, 1.0, 3.0]) == [2.5, 1.0, 2.5]
    assert pearson_r([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0) and math.isnan(
        pearson_r([1, 1, 1], [1, 2, 3], math.nan)
    )
    assert pearson_r([1, 1, 1], [1, 2, 3]) == 0.0  # the STS-B convention by default
    assert spearman_r([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)


def test_transfer_report_adjusts_each_sources_p_by_holm_over_the_sources_tried():
    six = [0.5] * 6
    report = TransferReport("t", "accuracy", list(range(6)), 10, "vocab", six,
                            {"a": [0.6] * 6, "b": [0.55] * 6, "c": [0.5, 0.6, 0.4, 0.5, 0.6, 0.4]})  # fmt: skip
    # a and b beat vocab on every seed: p = 2 / 64 each; c: p = 1. Holm: 3 x 2/64, then 2 x 2/64 -> 3 x 2/64.
    assert report.holm() == pytest.approx({"a": 6 / 64, "b": 6 / 64, "c": 1.0})
    table = report.table()
    assert "gain of a over baseline: +10.00 points" in table
    assert "6 seeds: significant; after Holm over the 3 sources tried: p = 0.0938, not significant" in table
    assert report.to_dict()["significance"]["b"]["p_holm"] == pytest.approx(6 / 64)
    one = TransferReport("t", "accuracy", list(range(6)), 10, "vocab", six, {"a": [0.6] * 6})
    assert "Holm" not in one.table() and one.holm() == pytest.approx({"a": 2 / 64})
