"""`softprompt study scale|length|init` on tiny models: every method's cells run and write one
schema, a resumed study skips finished cells, other settings are refused, and a model that
cannot fit a method is refused with its estimate while the other cells run."""

from __future__ import annotations

import json
import types

import pytest
import torch
from helpers import cli_loads, learnable_llama, run_cli, tiny_t5, toy_task

from softprompt.errors import ConfigError, ModelError
from softprompt.models import loading, memory
from softprompt.study import Cell, StudyConfig, plan, run_study
from softprompt.study import run as study_run
from softprompt.tasks import base

SMALL = dict(models="tiny", tasks="toy", steps=3, batch_size=4, max_eval=8, eval_batch_size=8)


@pytest.fixture(autouse=True)
def toy_registered(monkeypatch):
    monkeypatch.setitem(base._REGISTRY, "toy", lambda: toy_task(n_train=24, n_dev=8))


@pytest.mark.parametrize("builder", [learnable_llama, tiny_t5], ids=["decoder", "t5"])
def test_scale_runs_a_cell_per_method_and_every_cell_writes_the_same_schema(builder, tmp_path):
    lm = builder()
    table = run_study("scale", StudyConfig(**SMALL), tmp_path, lambda name: lm, progress=False)
    results = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("tiny/*/toy/seed0/result.json"))]
    assert sorted(r["series"] for r in results) == ["lora", "model", "prompt", "zero-shot"]
    assert not any(tmp_path.glob("tiny/*/toy/seed0/checkpoint"))  # a finished cell keeps no resume state
    assert len({tuple(sorted(r)) for r in results}) == 1  # one schema
    by_method = {r["series"]: r for r in results}
    assert by_method["zero-shot"]["trainable_params"] == 0
    assert by_method["prompt"]["trainable_params"] < by_method["lora"]["trainable_params"]
    assert by_method["lora"]["trainable_params"] < by_method["model"]["trainable_params"]
    assert all(r["peak_memory"] > 0 and r["train_examples_per_s"] >= 0 for r in results)
    assert {r["series"] for r in table["rows"]} == set(by_method)
    for name in ("table.json", "table.md", "figure.png"):
        assert (tmp_path / name).stat().st_size > 0
    md = (tmp_path / "table.md").read_text()
    assert "train ex/s" in md and "peak memory" in md and "bytes/task" in md and table["machine"]["torch"] in md


def test_a_resumed_study_trains_only_the_cells_without_a_result(tmp_path, monkeypatch):
    lm = learnable_llama()
    cfg = StudyConfig(**{**SMALL, "methods": "prompt,zero-shot", "seeds": "0,1"})
    run_study("scale", cfg, tmp_path, lambda name: lm, progress=False)
    (tmp_path / "tiny" / "prompt" / "toy" / "seed1" / "result.json").unlink()  # killed while this cell ran
    trained = []
    real = study_run.train
    def counting(lm, task, tc, *a, **k):
        trained.append(tc.seed)
        return real(lm, task, tc, *a, **k)

    monkeypatch.setattr(study_run, "train", counting)
    table = run_study("scale", cfg, tmp_path, lambda name: lm, progress=False)
    assert trained == [1]
    assert {(r["series"], tuple(r["seeds"])) for r in table["rows"]} == {("prompt", (0, 1)), ("zero-shot", (0, 1))}


def test_a_time_limit_starts_no_cell_that_would_end_past_it_and_the_same_call_resumes(tmp_path, monkeypatch):
    lm = learnable_llama()
    cfg = StudyConfig(**{**SMALL, "methods": "prompt,zero-shot", "seeds": "0,1"})
    now = [0.0]
    monkeypatch.setattr(study_run, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
    trained, real = [], study_run.train

    def ten_seconds(lm, task, tc, *a, **k):  # every cell takes 10 s on the study's clock
        trained.append((tc.method, tc.seed))
        now[0] += 10
        return real(lm, task, tc, *a, **k)

    monkeypatch.setattr(study_run, "train", ten_seconds)
    table = run_study("scale", cfg, tmp_path, lambda name: lm, progress=False, time_limit=25)
    # 0 s: the first prompt cell starts; 10 + 10 <= 25: the second; 20 s: zero-shot has no time
    # yet, so it starts; 30 s: past the limit, the last cell waits.
    assert len(trained) == 3 and len(table["not_run"]) == 1
    assert sum(len(r["seeds"]) for r in table["rows"]) == 3
    assert "Not run (time limit" in (tmp_path / "table.md").read_text()
    trained.clear()
    table = run_study("scale", cfg, tmp_path, lambda name: lm, progress=False, time_limit=25)
    assert len(trained) == 1 and table["not_run"] == []
    assert sum(len(r["seeds"]) for r in table["rows"]) == 4


def test_a_study_killed_mid_way_leaves_the_table_of_the_cells_it_finished(tmp_path, monkeypatch):
    lm = learnable_llama()
    real = study_run.train

    def killed_at_seed1(lm, task, tc, *a, **k):
        if tc.seed == 1:
            raise KeyboardInterrupt
        return real(lm, task, tc, *a, **k)

    monkeypatch.setattr(study_run, "train", killed_at_seed1)
    with pytest.raises(KeyboardInterrupt):
        run_study("scale", StudyConfig(**{**SMALL, "methods": "prompt", "seeds": "0,1"}), tmp_path, lambda n: lm)
    rows = json.loads((tmp_path / "table.json").read_text())["rows"]
    assert [(r["series"], r["seeds"]) for r in rows] == [("prompt", [0])]


def test_a_study_grown_over_several_runs_tabulates_every_cell_made_with_its_settings(tmp_path):
    lm = learnable_llama()
    run_study("scale", StudyConfig(**{**SMALL, "methods": "zero-shot"}), tmp_path, lambda name: lm, progress=False)
    other = run_study("scale", StudyConfig(**{**SMALL, "methods": "prompt", "steps": 4}), tmp_path / "b", lambda n: lm)
    assert {r["series"] for r in other["rows"]} == {"prompt"}
    table = run_study("scale", StudyConfig(**{**SMALL, "methods": "prompt"}), tmp_path, lambda name: lm, progress=False)
    assert {r["series"] for r in table["rows"]} == {"prompt", "zero-shot"}  # the earlier run's cell joins
    assert json.loads((tmp_path / "table.json").read_text())["rows"] == table["rows"]
    (tmp_path / "b" / "tiny").rename(tmp_path / "tiny2")  # a 4-step cell elsewhere in OUT: other settings
    assert (tmp_path / "tiny2" / "prompt" / "toy" / "seed0" / "result.json").is_file()
    again = run_study("scale", StudyConfig(**{**SMALL, "methods": "prompt"}), tmp_path, lambda name: lm, progress=False)
    assert sorted((r["series"], tuple(r["seeds"])) for r in again["rows"]) == [("prompt", (0,)), ("zero-shot", (0,))]
    seed1 = run_study("scale", StudyConfig(**{**SMALL, "methods": "prompt", "seeds": "1"}), tmp_path, lambda n: lm)
    assert seed1["settings"]["seeds"] == "0,1"  # the header names every seed the grown table holds
    assert "seeds 0,1," in (tmp_path / "table.md").read_text()


def test_a_cell_finished_with_other_settings_is_refused_before_anything_runs(tmp_path):
    lm = learnable_llama()
    run_study("scale", StudyConfig(**{**SMALL, "methods": "zero-shot"}), tmp_path, lambda name: lm, progress=False)
    with pytest.raises(ConfigError, match="finished with other settings: steps=3 .now 4."):
        run_study("scale", StudyConfig(**{**SMALL, "methods": "zero-shot", "steps": 4}), tmp_path, lambda n: lm)
    with pytest.raises(ConfigError, match="length_scaled_lr=False .now True."):
        run_study("scale", StudyConfig(**{**SMALL, "methods": "zero-shot", "length_scaled_lr": True}), tmp_path,
                  lambda n: lm)


def test_a_cell_finished_before_a_setting_existed_counts_as_made_at_its_old_value(tmp_path):
    lm = learnable_llama()
    first = run_study("scale", StudyConfig(**{**SMALL, "methods": "zero-shot"}), tmp_path, lambda name: lm)
    result = next(tmp_path.glob("*/*/*/seed0/result.json"))
    old = json.loads(result.read_text())
    del old["settings"]["length_scaled_lr"]  # as written before --length-scaled-lr
    result.write_text(json.dumps(old))
    again = run_study("scale", StudyConfig(**{**SMALL, "methods": "zero-shot"}), tmp_path, lambda n: pytest.fail("ran"))
    assert again["rows"] == first["rows"]
    with pytest.raises(ConfigError, match="length_scaled_lr=False .now True."):
        run_study("scale", StudyConfig(**{**SMALL, "methods": "zero-shot", "length_scaled_lr": True}), tmp_path,
                  lambda n: lm)


def test_length_scaled_lr_reaches_every_prompt_cell():
    cfg = StudyConfig(**SMALL, length_scaled_lr=True)
    assert cfg.train_config(Cell("tiny", "prompt", "toy", 0, prompt_length=100)).length_scaled_lr


def test_a_method_the_model_cannot_hold_is_refused_with_its_estimate_and_the_rest_runs(tmp_path):
    lm = learnable_llama()

    def check(model, method, in_place=False):
        if method == "model":
            raise ModelError(f"--model {model}: --method model needs about 30.0 GiB, 24.0 GiB available")

    table = run_study("scale", StudyConfig(**{**SMALL, "methods": "prompt,model"}), tmp_path, lambda n: lm, check,
                      progress=False)
    assert [r["series"] for r in table["rows"]] == ["prompt"]
    assert "needs about 30.0 GiB" in table["refused"][0]["reason"]
    assert "needs about 30.0 GiB" in (tmp_path / "table.md").read_text()


def test_weight_cells_run_last_and_the_last_of_a_model_trains_its_loaded_weights_in_place(tmp_path):
    models = {"tiny": learnable_llama(), "other": learnable_llama()}
    before = {k: v.clone() for k, v in models["tiny"].model.state_dict().items()}
    loads, checks = [], []

    def load(name):
        loads.append(name)
        return models[name]

    def check(model, method, in_place=False):
        checks.append((model, method, in_place))

    cfg = StudyConfig(**{**SMALL, "models": "tiny,other", "methods": "model,prompt,lora", "seeds": "0,1"})
    table = run_study("scale", cfg, tmp_path, load, check, progress=False)
    assert loads == ["tiny", "other"]  # one load per model
    tiny = [c[1:] for c in checks if c[0] == "tiny"]
    assert [m for m, _ in tiny] == ["prompt", "prompt", "lora", "lora", "model", "model"]
    assert [p for _, p in tiny] == [False] * 5 + [True]  # only the last cell gives the loaded model up
    changed = [k for k, v in models["tiny"].model.state_dict().items() if not torch.equal(before[k], v)]
    assert changed  # the in-place cell trained the loaded weights themselves
    n_params = sum(v.numel() for v in before.values())
    assert {r["model_params"] for r in table["rows"]} == {n_params}  # counted before LoRA injects adapters


def test_length_and_init_studies_plan_one_prompt_cell_per_setting_and_size():
    cfg = StudyConfig(models="a,b", tasks="toy", lengths="1,5,20", inits="uniform,labels")
    length = plan("length", cfg)
    assert len(length) == 2 * 3 and {c.method for c in length} == {"prompt"}
    assert sorted({c.prompt_length for c in length}) == [1, 5, 20]
    scale = plan("scale", StudyConfig(models="a", tasks="toy", methods="model,prompt,lora,zero-shot"))
    assert [c.method for c in scale] == ["prompt", "zero-shot", "lora", "model"]  # weight tuning last, model last
    init = plan("init", cfg)
    assert [(c.model, c.init) for c in init] == [("a", "uniform"), ("a", "labels"), ("b", "uniform"), ("b", "labels")]


def test_study_command_prints_the_table_and_refuses_an_oversized_model_by_its_estimate(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "big"
    learnable_llama().model.save_pretrained(folder)
    cli_loads(monkeypatch, learnable_llama())
    room = memory.estimate(loading.parameter_count(str(folder)), 4, "prompt") + 1  # a prompt fits, not model tuning
    monkeypatch.setattr(memory, "available", lambda device="cpu": room)
    capsys.readouterr()
    code, out, err = run_cli(
        capsys, "study", "length", "--models", folder, "--tasks", "toy", "--lengths", "2", "--steps", "2",
        "--batch-size", "4", "--max-eval", "8", "--out", tmp_path / "study", "--precision", "fp32",
    )
    assert code == 0, err
    assert "| 2 | toy |" in out and (tmp_path / "study" / "figure.png").is_file()
    code, out, err = run_cli(
        capsys, "study", "scale", "--models", folder, "--tasks", "toy", "--methods", "model", "--steps", "2",
        "--out", tmp_path / "scale", "--precision", "fp32",
    )
    assert code == 0 and "Refused" in out and "needs about" in out and "available" in out


def test_bad_study_settings_are_one_line_errors(tmp_path, capsys):
    for flag, value in (
        ("--methods", "prompt,adapters"), ("--tasks", "nope"), ("--lengths", "5,x"), ("--seeds", "a"),
        ("--time-limit", "soon"),
    ):
        code, _, err = run_cli(capsys, "study", "scale", flag, value, "--out", tmp_path / "s")
        assert code == 2 and flag in err and len(err.strip().splitlines()) == 1


def test_a_length_table_lists_prompt_lengths_in_numeric_order():
    from softprompt.study.table import build_table

    def result(length, seed):
        return {"cell": {"model": "m", "task": "toy", "seed": seed}, "series": length, "score": 0.5,
                "model_params": 10, "train_examples_per_s": 1.0, "peak_memory": 1, "trainable_params": 4,
                "bytes_per_task": 16, "precision": "float32"}

    results = [result(n, s) for n in ("20", "100", "5", "150", "1") for s in (1, 0)]
    table = build_table("length", StudyConfig(seeds="7"), results, {})
    assert [r["series"] for r in table["rows"]] == ["1", "5", "20", "100", "150"]
    assert table["settings"]["seeds"] == "0,1"


def test_figure_points_are_per_task_so_a_task_run_for_fewer_seeds_does_not_skew_the_others(tmp_path):
    from softprompt.study.table import build_table, write_outputs

    def result(task, seed, score):
        return {"cell": {"model": "m", "task": task, "seed": seed}, "series": "prompt", "score": score,
                "model_params": 10, "train_examples_per_s": 1.0, "peak_memory": 1, "trainable_params": 4,
                "bytes_per_task": 16, "precision": "float32"}

    # sst2 on seeds 0 and 1, wsc added later on seed 0 only: an average over tasks per seed
    # would mix (sst2 + wsc) / 2 with sst2 alone.
    results = [result("sst2", 0, 0.8), result("sst2", 1, 0.9), result("wsc", 0, 0.4)]
    table = build_table("scale", StudyConfig(), results, {"processor": "x", "threads": 1, "cpu_flags": [],
                                                          "cuda": None, "torch": "t"})
    points = {p["task"]: p for p in table["points"]}
    assert points["sst2"]["score"] == pytest.approx(0.85) and points["sst2"]["std"] > 0
    assert points["wsc"]["score"] == pytest.approx(0.4) and points["wsc"]["std"] == 0
    write_outputs(table, tmp_path)
    assert (tmp_path / "figure.png").stat().st_size > 0
