"""The command line end to end on a tiny model: train, eval, predict, inspect, PEFT round trip,
and bad input (one-line error, exit code 2, nothing written)."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import cli_loads, learnable_llama, run_cli, tiny_llama, toy_rows, write_csv, write_jsonl

import softprompt.cli as cli
from softprompt.evaluate import predict
from softprompt.io import load_prompt
from softprompt.scoring import PromptedLM
from softprompt.tasks import get_task
from softprompt.tasks.base import Example
from softprompt.tasks.crosstask import task_for_prompt

LABELS = "neg=negative,pos=positive"


@pytest.fixture
def model(monkeypatch):
    """Every command loads the same tiny model instead of the embedded one."""
    return cli_loads(monkeypatch, learnable_llama())


@pytest.fixture
def data(tmp_path):
    return write_csv(tmp_path / "train.csv", toy_rows(40, seed=0)), write_csv(
        tmp_path / "dev.csv", toy_rows(16, seed=1)
    )


def train_args(data, out, *extra):
    train_csv, dev_csv = data
    return (
        "train",
        "--task",
        "toy",
        "--train-file",
        train_csv,
        "--dev-file",
        dev_csv,
        "--text-field",
        "sentence",
        "--labels",
        LABELS,
        "--template",
        "{sentence}",
        "--steps",
        "4",
        "--batch-size",
        "8",
        "--prompt-length",
        "4",
        "--eval-every",
        "2",
        "--out",
        out,
        *extra,
    )


@pytest.fixture
def trained(model, data, tmp_path, capsys):
    code, out, err = run_cli(capsys, *train_args(data, tmp_path / "run"))
    assert code == 0, err
    return tmp_path / "run", out


def test_train_writes_the_run_folder_and_prints_dev_accuracy(trained):
    run_dir, out = trained
    assert "toy dev accuracy" in out and "best at step" in out
    for name in ("best/prompt.safetensors", "best/prompt.json", "checkpoint/trainer.json", "log.jsonl", "curve.png"):
        assert (run_dir / name).is_file(), name
    saved = load_prompt(run_dir / "best")
    assert saved.weight.shape == (4, 32)
    assert saved.task["template"] == "{sentence}" and saved.task["verbalizer"] == {"neg": "negative", "pos": "positive"}
    evals = [json.loads(l) for l in (run_dir / "log.jsonl").read_text().splitlines() if "eval" in l]
    assert [e["step"] for e in evals] == [2, 4]


def test_eval_on_the_users_dev_file_reuses_the_saved_template_and_labels(trained, data, tmp_path, capsys):
    run_dir, _ = trained
    code, out, err = run_cli(
        capsys, "eval", "--prompt", run_dir, "--dev-file", data[1], "--output", tmp_path / "e.json"
    )
    assert code == 0, err
    report = json.loads((tmp_path / "e.json").read_text())
    assert f"({16} examples)" in out
    assert report["metrics"]["accuracy"] == pytest.approx(load_prompt(run_dir / "best").metrics["accuracy"])
    assert set(report["predictions"]) <= {"neg", "pos"}


def test_predict_reads_stdin_and_prints_one_label_word_per_line(trained, capsys):
    run_dir, _ = trained
    code, out, err = run_cli(capsys, "predict", "--prompt", run_dir, stdin="the movie great\n\nso awful\nb c great\n")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 3 and set(lines) <= {"neg", "pos"}


def test_predict_from_a_file(trained, tmp_path, capsys):
    run_dir, _ = trained
    (tmp_path / "in.txt").write_text("a great\nd awful\n")
    code, out, _ = run_cli(capsys, "predict", "--prompt", run_dir, "--input", tmp_path / "in.txt")
    assert code == 0 and len(out.splitlines()) == 2


def test_predict_with_another_task_keeps_the_prompts_label_words(model, tmp_path, capsys):
    # A prompt trained on labels negative/positive, answering with the words swapped, used on
    # sst2 (same label names, its own words): as `eval --task`, the prompt's words score each
    # label (tasks/crosstask.py), so every prediction is the opposite of sst2's own words'.
    rows = [(s, {"pos": "positive", "neg": "negative"}[label]) for s, label in toy_rows(16)]
    train_csv = write_csv(tmp_path / "train.csv", rows)
    code, _, err = run_cli(
        capsys,
        "train",
        "--task",
        "swapped",
        "--train-file",
        train_csv,
        "--dev-file",
        train_csv,
        "--text-field",
        "sentence",
        "--labels",
        "negative=positive,positive=negative",
        "--template",
        "{sentence}",
        "--steps",
        "2",
        "--batch-size",
        "8",
        "--prompt-length",
        "4",
        "--out",
        tmp_path / "run",
    )
    assert code == 0, err
    texts = ["the movie great", "so awful", "b c great", "a sentence awful", "maybe great"]
    code, out, err = run_cli(
        capsys, "predict", "--prompt", tmp_path / "run", "--task", "sst2", stdin="\n".join(texts) + "\n"
    )
    assert code == 0, err
    saved = load_prompt(tmp_path / "run" / "best")
    sst2 = get_task("sst2")
    examples = [Example({"sentence": t}, "negative") for t in texts]
    mapped, _ = predict(PromptedLM(model), saved.weight, task_for_prompt(sst2, saved.task), examples)
    own_words, _ = predict(PromptedLM(model), saved.weight, sst2, examples)
    assert out.splitlines() == mapped
    assert mapped == [{"negative": "positive", "positive": "negative"}[p] for p in own_words]
    # A task sharing neither a label nor a label word: the one-line error eval gives.
    code, _, err = run_cli(capsys, "predict", "--prompt", tmp_path / "run", "--task", "rte", stdin="a\n")
    assert code == 2 and "no label or label word in common" in err


def test_inspect_lists_neighbours_of_every_position(trained, capsys):
    run_dir, _ = trained
    code, out, _ = run_cli(capsys, "inspect", "--prompt", run_dir, "--top-k", "3")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 4 and all(line.count("'") >= 6 for line in lines)


def test_peft_export_import_round_trip(trained, tmp_path, capsys):
    run_dir, _ = trained
    assert run_cli(capsys, "export-peft", "--prompt", run_dir, "--out", tmp_path / "adapter")[0] == 0
    assert (tmp_path / "adapter/adapter_config.json").is_file()
    (tmp_path / "adapter/prompt.json").unlink()  # as a PEFT-made adapter would come
    code, _, err = run_cli(capsys, "import-peft", tmp_path / "adapter", "--out", tmp_path / "back")
    assert code == 0, err
    assert torch.equal(load_prompt(tmp_path / "back").weight, load_prompt(run_dir / "best").weight)
    code, out, _ = run_cli(capsys, "predict", "--prompt", tmp_path / "back", "--task", "sst2", stdin="great\n")
    assert code == 0 and out.strip() in {"negative", "positive"}


def test_a_residual_prompt_is_saved_plain_for_eval_and_peft_export(model, data, tmp_path, capsys):
    code, out, err = run_cli(capsys, *train_args(data, tmp_path / "run", "--reparam", "residual"))
    assert code == 0, err
    best = load_prompt(tmp_path / "run" / "best")
    assert best.training["reparam"] == "residual" and best.weight.shape == (4, 32)
    code, shown, err = run_cli(capsys, "eval", "--prompt", tmp_path / "run", "--dev-file", data[1])
    assert code == 0, err
    assert f"{100 * best.metrics['accuracy']:.2f}" in shown  # the saved prompt scores as training reported
    code, _, err = run_cli(capsys, "export-peft", "--prompt", tmp_path / "run", "--out", tmp_path / "adapter")
    assert code == 0, err
    code, _, err = run_cli(capsys, *train_args(data, tmp_path / "run", "--resume", "--reparam", "none"))
    assert_one_line_error(code, err, "--reparam")


def test_resume_continues_to_the_new_step_count(trained, data, capsys):
    run_dir, _ = trained
    code, _, err = run_cli(capsys, *train_args(data, run_dir, "--resume"))  # already at 4 steps: nothing to do
    assert code == 0, err
    args = list(train_args(data, run_dir, "--resume"))
    args[args.index("--steps") + 1] = "6"
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    steps = [json.loads(l)["step"] for l in (run_dir / "log.jsonl").read_text().splitlines() if "loss" in l]
    assert steps == [1, 2, 3, 4, 5, 6]


# -- bad input: one line on stderr, exit code 2, nothing written ------------------------------


def assert_one_line_error(code, err, *needles):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_missing_training_file(model, data, tmp_path, capsys):
    args = list(train_args(data, tmp_path / "run"))
    args[args.index("--train-file") + 1] = tmp_path / "nope.csv"
    code, _, err = run_cli(capsys, *args)
    assert_one_line_error(code, err, "nope.csv")
    assert not (tmp_path / "run").exists()


def test_malformed_row_names_file_and_line(model, data, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    write_jsonl(bad, [{"sentence": "a great", "label": "pos"}, {"sentence": "d awful", "label": "neg"}])
    bad.write_text(bad.read_text() + '{"sentence": "oops", \n')
    args = list(train_args(data, tmp_path / "run"))
    args[args.index("--train-file") + 1] = bad
    code, _, err = run_cli(capsys, *args)
    assert_one_line_error(code, err, "bad.jsonl:3")
    assert not (tmp_path / "run").exists()


def test_label_outside_the_label_words(model, data, tmp_path, capsys):
    rows = toy_rows(6) + [("c great", "meh")]
    write_csv(data[0], rows)
    code, _, err = run_cli(capsys, *train_args(data, tmp_path / "run"))
    assert_one_line_error(code, err, "train.csv:8", "'meh'")
    assert not (tmp_path / "run").exists()


def test_empty_dataset(model, data, tmp_path, capsys):
    write_csv(data[0], [])
    code, _, err = run_cli(capsys, *train_args(data, tmp_path / "run"))
    assert_one_line_error(code, err, "train.csv", "no examples")
    assert not (tmp_path / "run").exists()


@pytest.fixture
def no_model(monkeypatch):
    """Loading a model fails the test: bad input must be refused before the slow part."""

    def refuse(name, precision):
        raise AssertionError("the model was loaded before the bad input was found")

    monkeypatch.setattr(cli.runtime, "load_model", refuse)


@pytest.mark.parametrize("split", ["--train-file", "--dev-file"])
def test_bad_data_files_fail_before_the_model_loads(no_model, data, tmp_path, capsys, split):
    bad = write_csv(tmp_path / "bad.csv", toy_rows(4) + [("c great", "meh")])
    args = list(train_args(data, tmp_path / "run"))
    args[args.index(split) + 1] = bad
    code, _, err = run_cli(capsys, *args)
    assert_one_line_error(code, err, "bad.csv:6", "'meh'")


def test_eval_data_fails_before_the_model_loads(trained, data, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli.runtime, "load_model", lambda name, precision: pytest.fail("model loaded first"))
    bad = write_csv(tmp_path / "dev.csv", [("a great", "pos"), ("b", "meh")])
    code, _, err = run_cli(capsys, "eval", "--prompt", tmp_path / "run", "--dev-file", bad, "--text-field", "sentence")
    assert_one_line_error(code, err, "dev.csv:3", "'meh'")


def test_unknown_model(data, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = run_cli(capsys, *train_args(data, tmp_path / "run", "--model", "no-such-model-xyz"))
    assert_one_line_error(code, err, "no-such-model-xyz")
    assert not (tmp_path / "run").exists()


def test_prompt_saved_for_another_model_is_refused(trained, monkeypatch, capsys):
    run_dir, _ = trained
    other = tiny_llama(seed=7, hidden_size=32)
    monkeypatch.setattr(cli.runtime, "load_model", lambda name, precision: other)
    code, _, err = run_cli(capsys, "predict", "--prompt", run_dir, stdin="great\n")
    assert_one_line_error(code, err, "tiny-llama")


@pytest.mark.parametrize(
    "flag,value",
    [
        ("--steps", "ten"),
        ("--lr", "fast"),
        ("--steps", "0"),
        ("--lr", "-1"),
        ("--lr", "inf"),
        ("--weight-decay", "nan"),
        ("--ema", "nan"),
        ("--checkpoint-every", "0"),
    ],
)
def test_bad_numeric_setting(model, data, tmp_path, capsys, flag, value):
    code, _, err = run_cli(capsys, *train_args(data, tmp_path / "run", flag, value))
    assert_one_line_error(code, err, flag.lstrip("-"))
    assert not (tmp_path / "run").exists()


def test_existing_output_is_not_overwritten(trained, data, capsys):
    run_dir, _ = trained
    before = (run_dir / "best/prompt.safetensors").read_bytes()
    code, _, err = run_cli(capsys, *train_args(data, run_dir))
    assert_one_line_error(code, err, "not empty")
    assert (run_dir / "best/prompt.safetensors").read_bytes() == before


def test_unknown_task(model, tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "--task", "sst3", "--out", tmp_path / "run")
    assert_one_line_error(code, err, "sst3")
    assert not (tmp_path / "run").exists()


def test_predict_without_input_lines(trained, capsys):
    code, _, err = run_cli(capsys, "predict", "--prompt", trained[0], stdin="\n \n")
    assert_one_line_error(code, err, "no input lines")


def test_every_command_has_help(capsys):
    for command in ("train", "eval", "predict", "inspect", "export-peft", "import-peft", "tasks"):
        code, out, _ = run_cli(capsys, command, "--help")
        assert code == 0 and "Usage" in out and "--help" in out


@pytest.mark.parametrize(
    "argv, needle",
    [
        (("eval", "--batch-size", "0"), "--batch-size"),
        (("eval", "--max-eval", "-3"), "--max-eval"),
        (("predict", "--batch-size", "0"), "--batch-size"),
        (("inspect", "--top-k", "0"), "--top-k"),
        (("eval", "--output", "no/such/folder/out.json"), "no/such/folder"),
    ],
)
def test_bad_eval_predict_inspect_flags_fail_before_the_model_loads(
    trained, tmp_path, capsys, monkeypatch, argv, needle
):
    monkeypatch.setattr(cli.runtime, "load_model", lambda name, precision: pytest.fail("model loaded first"))
    code, _, err = run_cli(capsys, argv[0], "--prompt", tmp_path / "run", *argv[1:], stdin="a great movie\n")
    assert_one_line_error(code, err, needle)


def test_non_utf8_input_is_one_line(trained, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli.runtime, "load_model", lambda name, precision: pytest.fail("model loaded first"))
    bad = tmp_path / "in.txt"
    bad.write_bytes("great movie\n".encode("utf-16"))
    code, _, err = run_cli(capsys, "predict", "--prompt", tmp_path / "run", "--input", bad)
    assert_one_line_error(code, err, "in.txt", "not UTF-8")


def test_eval_output_is_written_whole(trained, data, tmp_path, capsys):
    code, _, err = run_cli(
        capsys,
        "eval",
        "--prompt",
        tmp_path / "run",
        "--dev-file",
        data[1],
        "--text-field",
        "sentence",
        "--output",
        tmp_path / "ev.json",
    )
    assert code == 0, err
    report = json.loads((tmp_path / "ev.json").read_text())
    assert set(report) == {"task", "split", "metrics", "predictions"} and len(report["predictions"]) == 16
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".ev.json")] == []
