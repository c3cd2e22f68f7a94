"""bench/: the table's numbers against hand-computed ones, the files a run writes, reruns
that reuse finished tasks, refused input, and prompts used on a task they were not trained on."""

from __future__ import annotations

import json
import math

import pytest

import softprompt.bench.suite as suite
import softprompt.cli as cli
from helpers import tiny_llama, toy_task
from softprompt.tasks.crosstask import task_for_prompt
from softprompt.bench.suite import BenchConfig, Job, eval_sample, plan_tasks, resolve_suite, run_bench
from softprompt.bench.table import build_table, render_markdown
from softprompt.config import TrainConfig
from softprompt.errors import ConfigError, DataError
from softprompt.tasks import get_task
from softprompt.tasks.base import Example, Task, dev_sample
from softprompt.tasks.readers import data_root
from softprompt.train import _task_data

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SD = math.sqrt(0.02)  # sample std of two scores 0.1 apart either side of their mean


def two_metric_task(name: str = "duo", splits=("train", "dev")) -> Task:
    toy = toy_task()
    return Task(
        name=name,
        template=toy.template,
        verbalizer=toy.verbalizer,
        metrics=("accuracy", "macro_f1"),
        loader=toy.loader,
        splits=splits,
        description="toy with two metrics",
    )


def result(seed: int, **metrics: float) -> dict:
    return {"seed": seed, "metrics": metrics, "examples": 16, "seconds": 1.0}


# -- table ----------------------------------------------------------------------------------


def test_table_averages_metrics_then_tasks_and_gives_std_over_seeds():
    duo, toy, shift = two_metric_task(), toy_task(), toy_task(name="shift")
    jobs = [Job(duo), Job(toy), Job(shift, source="toy")]
    results = {
        "duo": [result(0, accuracy=0.8, macro_f1=0.6), result(1, accuracy=0.6, macro_f1=0.4)],  # scores 0.7, 0.5
        "toy": [result(0, accuracy=0.9), result(1, accuracy=0.7)],  # scores 0.9, 0.7
        "shift": [result(0, accuracy=0.3), result(1, accuracy=0.5)],  # not averaged
    }
    table = build_table("tasks", jobs, results, BenchConfig(seeds=(0, 1)), {"name": "m"}, 1.0)
    duo_row, toy_row, shift_row = table["tasks"]
    assert duo_row["mean"] == pytest.approx({"accuracy": 0.7, "macro_f1": 0.5})
    assert duo_row["score"] == pytest.approx(0.6) and duo_row["score_std"] == pytest.approx(SD)
    assert duo_row["std"] == pytest.approx({"accuracy": SD, "macro_f1": SD})
    assert [s["score"] for s in duo_row["seeds"]] == pytest.approx([0.7, 0.5])
    assert toy_row["score"] == pytest.approx(0.8) and toy_row["score_std"] == pytest.approx(SD)
    # Avg per seed: (0.7 + 0.9) / 2 = 0.8 and (0.5 + 0.7) / 2 = 0.6; the shift set stays out.
    avg = table["average"]
    assert (avg["score"], avg["std"], avg["tasks"]) == (pytest.approx(0.7), pytest.approx(SD), ["duo", "toy"])
    assert (shift_row["in_average"], shift_row["prompt_of"], shift_row["score"]) == (False, "toy", pytest.approx(0.4))
    md = render_markdown(table)
    assert "|  | duo | toy | Avg | shift |" in md
    assert "| metric | acc/mF1 | acc |  | acc |" in md
    assert "| m, P=20, 500 steps | 70.0/50.0 ± 14.1 | 80.0 ± 14.1 | 70.0 ± 14.1 | 40.0 ± 14.1 |" in md
    assert "shift: evaluated with the toy prompt; not in Avg." in md


def test_one_seed_shows_no_spread():
    jobs = [Job(two_metric_task())]
    table = build_table(
        "tasks", jobs, {"duo": [result(3, accuracy=0.75, macro_f1=0.25)]}, BenchConfig(seeds=(3,)), {"name": "m"}, 0.0
    )
    assert table["tasks"][0]["score"] == 0.5 and table["tasks"][0]["score_std"] is None
    assert table["average"]["score"] == 0.5 and table["average"]["std"] is None
    assert "| 75.0/25.0 | 50.0 |" in render_markdown(table)


def test_carved_and_other_non_standard_splits_are_named():
    jobs = [Job(get_task(n)) for n in ("mnli", "boolq", "cb")]
    results = {n: [result(0, **{m: 0.5 for m in get_task(n).metrics})] for n in ("mnli", "boolq", "cb")}
    table = build_table("tasks", jobs, results, BenchConfig(), {"name": "m"}, 0.0)
    assert table["carved_splits"] == ["mnli"]
    assert set(table["split_notes"]) == {"mnli", "boolq"}
    md = render_markdown(table)
    assert "| MNLI-m† | BoolQ† | CB |" in md
    assert "† MNLI-m (carved split): MNLI; only dev_matched here" in md
    assert "† BoolQ (non-standard split): SuperGLUE BoolQ; full train not available" in md


# -- planning -------------------------------------------------------------------------------


def test_suites_and_sources():
    label, names = resolve_suite("SuperGLUE")
    assert label == "superglue" and names[-2:] == ["axb", "axg"]
    jobs = plan_tasks([get_task(n) for n in names])
    assert [(j.task.name, j.source) for j in jobs][-2:] == [("axb", "rte"), ("axg", "rte")]
    assert [j.source for j in plan_tasks([get_task("imdb"), get_task("sst2")])] == [None, "sst2"]
    assert [j.source for j in plan_tasks([get_task("imdb")])] == [None]  # IMDB alone trains its own prompt
    assert [j.source for j in plan_tasks([get_task(n) for n in ("mnli", "anli_r1", "axb")])] == [None, "mnli", "mnli"]
    with pytest.raises(
        ConfigError, match="'axb' has no train split: it is evaluated with the prompt of rte or rte_glue or mnli"
    ):
        plan_tasks([get_task("axb"), get_task("cb")])
    assert resolve_suite(" cb, rte ,cb") == ("tasks", ["cb", "rte"])
    with pytest.raises(ConfigError, match="unknown task nope"):
        resolve_suite("cb,nope")


def test_eval_sample_draws_whole_groups():
    examples = [Example({"x": str(i)}, "a", group=f"g{i // 3}") for i in range(30)]  # 10 groups of 3
    sample = eval_sample(examples, 10)
    groups = {e.group for e in sample}
    assert len(sample) == 9 and all(sum(e.group == g for e in sample) == 3 for g in groups)
    assert sample == eval_sample(examples, 10)  # seeded
    plain = [Example({"x": str(i)}, "a") for i in range(30)]
    assert len(eval_sample(plain, 7)) == 7 and eval_sample(plain, None) == plain


def test_training_and_bench_score_the_same_dev_sample():
    # `train --max-eval N` keeps the best prompt on the very sentences `bench --max-eval N` reports.
    plain = toy_task(n_dev=40).load("dev")
    ((_, _, dev),) = _task_data(toy_task(), TrainConfig(max_eval=7), plain, plain)
    assert dev == eval_sample(plain, 7) == dev_sample(plain, 7) != plain[:7]
    assert dev_sample(plain, 40) == plain and dev_sample(plain, None) == plain


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="--steps must be at least 1"):
        BenchConfig(steps=0)
    with pytest.raises(ConfigError, match="--seeds"):
        BenchConfig(seeds=(1, 1))
    with pytest.raises(ConfigError, match="--seeds: expected comma-separated integers"):
        suite.parse_seeds("0,x")


# -- runs -----------------------------------------------------------------------------------


@pytest.fixture
def toy_jobs():
    shift = two_metric_task("shift", splits=("dev",))
    return plan_tasks([shift, toy_task()], sources={"shift": ("toy",)})


CFG = BenchConfig(steps=2, prompt_length=2, seeds=(0, 1), max_eval=8, batch_size=4)


def test_run_writes_the_table_and_rerun_reuses_finished_tasks(tmp_path, toy_jobs, monkeypatch):
    lm, out = tiny_llama(), tmp_path / "bench"
    table = run_bench(lm, toy_jobs, CFG, out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["shift", "table.json", "table.md", "table.png", "toy"]
    assert sorted(p.name for p in (out / "toy" / "seed0").iterdir()) == [
        "best",
        "checkpoint",
        "curve.png",
        "embedding",
        "log.jsonl",
        "result.json",
    ]
    assert sorted(p.name for p in (out / "shift" / "seed1").iterdir()) == ["result.json"]
    assert (out / "table.png").read_bytes()[:8] == PNG_MAGIC
    assert json.loads((out / "table.json").read_text()) == json.loads(json.dumps(table))
    assert (out / "table.md").read_text() == render_markdown(table)
    toy_row, shift_row = table["tasks"]
    per_seed = [json.loads((out / "toy" / f"seed{s}" / "result.json").read_text()) for s in (0, 1)]
    assert [s["metrics"] for s in toy_row["seeds"]] == [r["metrics"] for r in per_seed]
    assert per_seed[0]["settings"]["steps"] == 2 and per_seed[0]["examples"] == 8
    assert shift_row["prompt_of"] == "toy" and shift_row["examples"] == 8

    def no_training(*args, **kwargs):
        raise AssertionError("a finished task was trained again")

    monkeypatch.setattr(suite, "train", no_training)
    again = run_bench(lm, toy_jobs, CFG, out, progress=False)
    assert again["tasks"] == table["tasks"]

    # A lost result is redone, and so is the evaluation that used its prompt; nothing else.
    (out / "toy" / "seed1" / "result.json").unlink()
    trained, evaluated = [], []
    monkeypatch.setattr(suite, "_train_one", lambda lm, task, cfg, seed, *a: trained.append(seed) or per_seed[seed])
    real_transfer = suite._transfer_one
    monkeypatch.setattr(
        suite,
        "_transfer_one",
        lambda lm, job, cfg, seed, *a: evaluated.append(seed) or real_transfer(lm, job, cfg, seed, *a),
    )
    run_bench(lm, toy_jobs, CFG, out, progress=False)
    assert (trained, evaluated) == ([1], [1])


def test_rerun_with_other_settings_is_refused_before_writing(tmp_path, toy_jobs):
    lm, out = tiny_llama(), tmp_path / "bench"
    run_bench(lm, toy_jobs, BenchConfig(steps=1, prompt_length=2, max_eval=4, batch_size=4), out, progress=False)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    with pytest.raises(ConfigError, match=r"result.json: finished with other settings: steps=1 \(now 2\)"):
        run_bench(lm, toy_jobs, BenchConfig(steps=2, prompt_length=2, max_eval=4, batch_size=4), out, progress=False)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys):
    for args in (["cb,nope"], ["axb"], ["cb", "--seeds", "0,a"], ["cb", "--steps", "0"], ["cb", "--init", "text"]):
        out = tmp_path / "never"
        assert cli.main(["bench", *args, "--out", str(out)]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert not out.exists()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert cli.main(["bench", "cb", "--out", str(tmp_path / "busy")]) == 2
    assert "not a bench output folder" in capsys.readouterr().err


def _have_data() -> bool:
    try:
        return (data_root() / "CB").is_dir()
    except DataError:
        return False


@pytest.mark.skipif(not _have_data(), reason="benchmark data folder not found")
def test_cli_bench_on_real_tasks_with_a_tiny_model(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli.runtime, "load_model", lambda model, precision: tiny_llama())
    out = tmp_path / "sg"
    args = [
        "bench",
        "cb,rte,axg",
        "--steps",
        "1",
        "--prompt-length",
        "2",
        "--batch-size",
        "2",
        "--max-eval",
        "6",
        "--out",
        str(out),
    ]
    assert cli.main(args) == 0
    shown = capsys.readouterr().out
    assert "| metric | acc/mF1 | acc |  | acc/GPS |" in shown
    table = json.loads((out / "table.json").read_text())
    assert [(r["task"], r["prompt_of"], r["examples"]) for r in table["tasks"]] == [
        ("cb", "cb", 6),
        ("rte", "rte", 6),
        ("axg", "rte", 6),
    ]
    axg = get_task("axg")
    assert table["tasks"][2]["split_note"] is None and table["carved_splits"] == []
    assert len({e.group for e in eval_sample(axg.load("dev"), 6)}) == 3  # AX-g pairs kept whole
    assert cli.main(args) == 0 and "reused" in capsys.readouterr().out


# -- one prompt, another task ---------------------------------------------------------------


def meta(name: str, verbalizer) -> dict:
    return {"name": name, "template": "{sentence}", "verbalizer": verbalizer, "metrics": ["accuracy"]}


def test_prompt_label_words_are_kept_by_label_name():
    sst2, rte, mnli = get_task("sst2"), get_task("rte"), get_task("mnli")
    assert task_for_prompt(get_task("imdb"), meta("sst2", dict(sst2.verbalizer))) == get_task("imdb")
    mapped = task_for_prompt(sst2, meta("reviews", {"negative": "bad", "positive": "good"}))
    assert dict(mapped.verbalizer) == {"negative": "bad", "positive": "good"} and mapped.template == sst2.template
    # MNLI -> RTE: entailment keeps MNLI's word, not_entailment (unseen) keeps RTE's.
    assert dict(task_for_prompt(rte, meta("mnli", dict(mnli.verbalizer))).verbalizer) == {
        "not_entailment": "no",
        "entailment": "yes",
    }
    assert dict(task_for_prompt(mnli, meta("rte", dict(rte.verbalizer))).verbalizer) == dict(mnli.verbalizer)
    assert task_for_prompt(sst2, {}) is sst2  # a PEFT adapter without task metadata


def test_incompatible_label_sets_are_one_line_errors():
    with pytest.raises(
        ConfigError,
        match=r"^prompt p was trained on 'sst2' with labels negative='negative', positive='positive'; task 'mnli' has labels .*: no label or label word in common$",
    ):
        task_for_prompt(get_task("mnli"), meta("sst2", dict(get_task("sst2").verbalizer)), where="prompt p")
    with pytest.raises(
        ConfigError, match="trained on generation task 'squad' and cannot be scored on classification task 'sst2'"
    ):
        task_for_prompt(get_task("sst2"), meta("squad", None))
    with pytest.raises(ConfigError, match="two labels share a word"):
        task_for_prompt(get_task("rte"), meta("x", {"entailment": "no", "other": "yes"}))


@pytest.mark.skipif(not _have_data(), reason="benchmark data folder not found")
def test_eval_command_scores_a_prompt_on_a_related_task(tmp_path, capsys, monkeypatch):
    from softprompt.io import SavedPrompt, save_prompt

    lm = tiny_llama()
    monkeypatch.setattr(cli.runtime, "load_model", lambda model, precision: lm)
    import torch

    save_prompt(
        tmp_path / "p",
        SavedPrompt(
            torch.zeros(2, lm.hidden_size), lm.identity, meta("reviews", {"negative": "awful", "positive": "great"})
        ),
    )
    assert (
        cli.main(
            [
                "eval",
                "--prompt",
                str(tmp_path / "p"),
                "--task",
                "sst2",
                "--max-eval",
                "4",
                "--output",
                str(tmp_path / "e.json"),
            ]
        )
        == 0
    )
    assert set(json.loads((tmp_path / "e.json").read_text())["predictions"]) <= {"negative", "positive"}
    assert cli.main(["eval", "--prompt", str(tmp_path / "p"), "--task", "mnli", "--max-eval", "4"]) == 2
    assert "no label or label word in common" in capsys.readouterr().err
