"""train.py: the loop learns, writes the documented folder, resumes exactly, and refuses
bad settings before touching the output folder."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from helpers import learnable_llama, tiny_llama, tiny_t5, toy_task
from softprompt.config import effective_lr
from softprompt.errors import ConfigError, ModelError
from softprompt.evaluate import predict
from softprompt.io import load_prompt
from softprompt.scoring import PromptedLM
from softprompt.tasks.base import Example
from softprompt.train import PromptAverage, TrainConfig, check_trainable, initial_prompt, train

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def read_log(out) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def losses(out) -> list[float]:
    return [r["loss"] for r in read_log(out) if "loss" in r]


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    """One 30-step AdamW run on the learnable tiny Llama, shared by the tests below."""
    out = tmp_path_factory.mktemp("run") / "out"
    cfg = TrainConfig(steps=30, batch_size=8, prompt_length=4, optimizer="adamw", lr=0.3, eval_every=10)
    result = train(learnable_llama(), toy_task(), cfg, out, progress=False)
    return out, cfg, result


def test_training_lowers_the_loss_and_beats_chance(learned):
    out, _, result = learned
    curve = losses(out)
    assert len(curve) == 30
    first, last = sum(curve[:5]) / 5, sum(curve[-5:]) / 5
    assert last < first / 2, (first, last)
    evals = [r for r in read_log(out) if "eval" in r]
    assert [r["step"] for r in evals] == [10, 20, 30]
    assert all(r["dev_examples"] == 16 for r in evals)
    best = max(r["eval"]["accuracy"] for r in evals)
    assert best >= 0.75  # chance is 0.5 on the balanced dev set
    assert result.best.metrics["accuracy"] == best
    assert result.best_step == next(r["step"] for r in evals if r["eval"]["accuracy"] == best)
    assert result.steps_done == 30 and result.train_examples_per_s > 0


def test_output_folder_holds_exactly_the_documented_files(learned):
    out, _, _ = learned
    assert sorted(p.name for p in out.iterdir()) == ["best", "checkpoint", "curve.png", "embedding", "log.jsonl"]
    assert json.loads((out / "embedding" / "prompt.json").read_text())["metrics"] == {"step": 10}
    assert sorted(p.name for p in (out / "best").iterdir()) == ["prompt.json", "prompt.safetensors"]
    assert sorted(p.name for p in (out / "checkpoint").iterdir()) == ["optimizer.safetensors", "prompt", "trainer.json"]
    assert (out / "curve.png").read_bytes()[:8] == PNG_MAGIC
    assert (out / "curve.png").stat().st_size > 1000


def test_best_prompt_json_carries_everything_to_reuse_it(learned):
    out, cfg, result = learned
    meta = json.loads((out / "best" / "prompt.json").read_text())
    lm = learnable_llama()
    assert meta["model"] == lm.identity.to_dict()
    assert meta["task"]["name"] == "toy"
    assert meta["task"]["template"] == "sst2 sentence: {sentence}"
    assert meta["task"]["verbalizer"] == {"neg": "negative", "pos": "positive"}
    assert meta["task"]["metrics"] == ["accuracy"]
    assert meta["init"] == "labels"  # auto picks the class labels for a classification task
    training = meta["training"]
    assert (training["steps"], training["lr"], training["optimizer"], training["prompt_length"]) == (
        30,
        0.3,
        "adamw",
        4,
    )
    assert (training["train_examples"], training["dev_examples"]) == (40, 16)
    assert meta["metrics"]["accuracy"] == result.best.metrics["accuracy"]
    assert meta["metrics"]["step"] == result.best_step and meta["metrics"]["dev_examples"] == 16
    weight = load_file(out / "best" / "prompt.safetensors")["prompt"]
    assert weight.shape == (4, 32) and weight.dtype == torch.float32
    assert torch.equal(weight, result.best.weight)
    trainer = json.loads((out / "checkpoint" / "trainer.json").read_text())
    assert trainer["step"] == 30 and trainer["best_step"] == result.best_step


def test_only_the_prompt_trains(llama, tmp_path):
    prompt = torch.nn.Parameter(torch.zeros(4, 32))
    check_trainable(llama, prompt)
    assert sum(p.numel() for p in llama.model.parameters() if p.requires_grad) == 0
    llama.model.lm_head.weight.requires_grad_(True)
    with pytest.raises(RuntimeError, match="only the 4x32 prompt"):
        check_trainable(llama, prompt)
    with pytest.raises(RuntimeError):
        train(llama, toy_task(), TrainConfig(steps=1, batch_size=4, prompt_length=4), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("optimizer", ["adafactor", "adamw"])
def test_resume_continues_exactly(tmp_path, optimizer):
    settings = dict(batch_size=4, prompt_length=4, optimizer=optimizer, eval_every=100)
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(learnable_llama(), toy_task(), TrainConfig(steps=6, **settings), straight, progress=False)
    train(learnable_llama(), toy_task(), TrainConfig(steps=3, **settings), split, progress=False)
    halfway = load_file(split / "checkpoint" / "prompt" / "prompt.safetensors")["prompt"]
    result = train(learnable_llama(), toy_task(), TrainConfig(steps=6, **settings), split, resume=True, progress=False)
    assert result.steps_done == 6
    a = load_file(straight / "checkpoint" / "prompt" / "prompt.safetensors")["prompt"]
    b = load_file(split / "checkpoint" / "prompt" / "prompt.safetensors")["prompt"]
    assert not torch.equal(b, halfway)  # it did train after resuming
    assert torch.equal(a, b)
    opt_a = load_file(straight / "checkpoint" / "optimizer.safetensors")
    opt_b = load_file(split / "checkpoint" / "optimizer.safetensors")
    assert opt_a.keys() == opt_b.keys() and all(torch.equal(opt_a[k], opt_b[k]) for k in opt_a)
    assert "average" in opt_a  # the prompt average (on by default) resumes too
    assert torch.equal(load_prompt(straight / "best").weight, load_prompt(split / "best").weight)
    assert losses(straight) == losses(split)  # same batches in the same order, same values
    assert [r["step"] for r in read_log(split) if "loss" in r] == [1, 2, 3, 4, 5, 6]


def test_resume_with_nothing_left_to_do(tmp_path):
    cfg = TrainConfig(steps=2, batch_size=4, prompt_length=4)
    first = train(tiny_llama(), toy_task(), cfg, tmp_path / "out", progress=False)
    result = train(tiny_llama(), toy_task(), cfg, tmp_path / "out", resume=True, progress=False)
    assert result.steps_done == 2 and result.examples_seen == 0
    assert torch.equal(result.best.weight, first.best.weight)


def test_resume_skips_a_torn_last_log_line(tmp_path):
    """A run killed mid-write leaves half a JSON line at the end of log.jsonl."""
    settings = dict(batch_size=4, prompt_length=4, eval_every=2)
    out = tmp_path / "out"
    train(tiny_llama(), toy_task(), TrainConfig(steps=2, **settings), out, progress=False)
    with open(out / "log.jsonl", "a") as handle:
        handle.write('{"step": 3, "lo')
    result = train(tiny_llama(), toy_task(), TrainConfig(steps=4, **settings), out, resume=True, progress=False)
    assert result.steps_done == 4
    assert [r["step"] for r in read_log(out) if "loss" in r] == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("change", "flag"),
    [
        ({"seed": 1}, "--seed"),
        ({"batch_size": 2}, "--batch-size"),
        ({"grad_accum": 2}, "--grad-accum"),
        ({"loss": "lm"}, "--loss"),
        ({"lr": 0.1}, "--lr"),
        ({"max_train": 20}, "--max-train"),
        ({"min_train_words": 1}, "--min-train-words"),
    ],
)
def test_resume_with_another_training_setting_is_refused(tmp_path, change, flag):
    settings = dict(batch_size=4, prompt_length=4)
    train(tiny_llama(), toy_task(), TrainConfig(steps=1, **settings), tmp_path / "out", progress=False)
    before = (tmp_path / "out/checkpoint/trainer.json").read_bytes()
    with pytest.raises(ConfigError, match=flag) as err:
        train(
            tiny_llama(),
            toy_task(),
            TrainConfig(steps=2, **{**settings, **change}),
            tmp_path / "out",
            resume=True,
            progress=False,
        )
    assert "\n" not in str(err.value)
    assert (tmp_path / "out/checkpoint/trainer.json").read_bytes() == before


def test_resume_compares_the_init_prompt_by_its_numbers_not_its_path(tmp_path):
    """A `builtin:NAME` init resolves to wherever the package is installed: a reinstall between
    a kill and --resume moves the folder, not the prompt. Another prompt is still refused, at
    another path or rebuilt at the same one."""
    source = tmp_path / "source"
    train(tiny_llama(), toy_task(), TrainConfig(steps=1, batch_size=4, prompt_length=4), source, progress=False)
    moved = tmp_path / "moved"
    shutil.copytree(source / "best", moved)
    settings = dict(batch_size=4, prompt_length=4)
    out = tmp_path / "out"
    train(tiny_llama(), toy_task(), TrainConfig(steps=1, init_from=str(source / "best"), **settings), out, progress=False)
    result = train(
        tiny_llama(), toy_task(), TrainConfig(steps=2, init_from=str(moved), **settings), out, resume=True, progress=False
    )
    assert result.steps_done == 2
    other = tmp_path / "other"
    train(tiny_llama(), toy_task(), TrainConfig(steps=1, seed=5, **settings), other, progress=False)
    with pytest.raises(ConfigError, match="--init-from"):
        train(
            tiny_llama(),
            toy_task(),
            TrainConfig(steps=3, init_from=str(other / "best"), **settings),
            out,
            resume=True,
            progress=False,
        )
    shutil.rmtree(moved)
    shutil.copytree(other / "best", moved)  # the path the run last resumed from, rebuilt with other numbers
    with pytest.raises(ConfigError, match="--init-from prompt of digest"):
        train(
            tiny_llama(),
            toy_task(),
            TrainConfig(steps=3, init_from=str(moved), **settings),
            out,
            resume=True,
            progress=False,
        )


def test_resume_with_other_training_data_is_refused(tmp_path):
    cfg = TrainConfig(steps=1, batch_size=4, prompt_length=4)
    train(tiny_llama(), toy_task(n_train=40), cfg, tmp_path / "out", progress=False)
    with pytest.raises(ConfigError, match="training data"):
        train(
            tiny_llama(),
            toy_task(n_train=24),
            TrainConfig(steps=2, batch_size=4, prompt_length=4),
            tmp_path / "out",
            resume=True,
            progress=False,
        )


def test_resume_with_another_prompt_length_is_a_config_error(tmp_path):
    train(
        tiny_llama(), toy_task(), TrainConfig(steps=1, batch_size=4, prompt_length=4), tmp_path / "out", progress=False
    )
    with pytest.raises(ConfigError, match="prompt"):
        train(
            tiny_llama(),
            toy_task(),
            TrainConfig(steps=2, batch_size=4, prompt_length=6),
            tmp_path / "out",
            resume=True,
            progress=False,
        )


def test_resume_without_checkpoint(tmp_path):
    with pytest.raises(ConfigError, match="no checkpoint/ to resume from"):
        train(
            tiny_llama(), toy_task(), TrainConfig(steps=2, batch_size=4), tmp_path / "out", resume=True, progress=False
        )
    assert not (tmp_path / "out").exists()


def test_non_empty_output_folder_is_refused_and_left_alone(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError) as err:
        train(tiny_llama(), toy_task(), TrainConfig(steps=2, batch_size=4), out, progress=False)
    assert "--resume" in str(err.value) and "--overwrite" in str(err.value) and str(out) in str(err.value)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "mine"


def test_overwrite_trains_into_a_non_empty_folder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    train(
        tiny_llama(),
        toy_task(),
        TrainConfig(steps=2, batch_size=4, prompt_length=3),
        out,
        overwrite=True,
        progress=False,
    )
    assert load_prompt(out / "best").weight.shape == (3, 32)
    assert len(losses(out)) == 2


def test_patience_stops_early(tmp_path):
    # A tiny lr on the default tiny model keeps dev accuracy flat, so no evaluation improves.
    cfg = TrainConfig(steps=50, batch_size=4, prompt_length=4, lr=1e-8, eval_every=1, patience=2)
    result = train(tiny_llama(), toy_task(), cfg, tmp_path / "out", progress=False)
    assert result.steps_done == 3 and result.best_step == 1
    assert len(losses(tmp_path / "out")) == 3


def test_max_train_and_max_eval_subsample(tmp_path):
    cfg = TrainConfig(steps=1, batch_size=4, prompt_length=2, max_train=8, max_eval=5)
    result = train(tiny_llama(), toy_task(), cfg, tmp_path / "out", progress=False)
    assert result.best.training["train_examples"] == 8
    assert result.best.metrics["dev_examples"] == 5


def test_min_train_words_keeps_only_long_enough_training_examples(tmp_path):
    task = toy_task()
    short = [Example({"sentence": "great"}, "pos", source=f"s:{i}") for i in range(6)]
    long = [Example({"sentence": "a great film, from start to end"}, "pos", source=f"l:{i}") for i in range(5)]
    dev = task.load("dev")
    cfg = TrainConfig(steps=1, batch_size=4, prompt_length=2, min_train_words=3)
    data = {"train_examples": short + long, "dev_examples": dev, "progress": False}
    result = train(tiny_llama(), task, cfg, tmp_path / "out", **data)
    assert result.best.training["train_examples"] == 5  # the seven-word ones; dev is not filtered
    assert result.best.metrics["dev_examples"] == len(dev)
    with pytest.raises(ConfigError, match="--min-train-words") as err:
        train(tiny_llama(), task, replace(cfg, min_train_words=8), tmp_path / "none", **data)
    assert "\n" not in str(err.value)


def test_init_from_a_saved_prompt(tmp_path, learned):
    out, _, result = learned
    lm = learnable_llama()
    weight, init = initial_prompt(lm, toy_task(), TrainConfig(prompt_length=4, init_from=str(out)))
    assert init == "file" and torch.equal(weight, result.best.weight)
    with pytest.raises(ModelError, match="--init-from"):
        initial_prompt(tiny_llama(seed=3), toy_task(), TrainConfig(prompt_length=4, init_from=str(out)))


@pytest.mark.parametrize(
    ("settings", "flag"),
    [
        ({"steps": 0}, "--steps"),
        ({"batch_size": 0}, "--batch-size"),
        ({"prompt_length": 0}, "--prompt-length"),
        ({"lr": -1.0}, "--lr"),
        ({"lr": float("nan")}, "--lr"),
        ({"optimizer": "sgd"}, "--optimizer"),
        ({"init": "zeros"}, "--init"),
        ({"max_eval": 0}, "--max-eval"),
        ({"min_train_words": 0}, "--min-train-words"),
        ({"patience": 0}, "--patience"),
        ({"warmup_steps": -1}, "--warmup-steps"),
        ({"ema": 1.0}, "--ema"),
        ({"ema": -0.1}, "--ema"),
        ({"loss": "mse"}, "--loss"),
    ],
)
def test_train_config_rejects_bad_settings_naming_the_flag(settings, flag):
    with pytest.raises(ConfigError) as err:
        TrainConfig(**settings)
    assert flag in str(err.value) and "\n" not in str(err.value)


def test_the_lm_objective_trains_too(tmp_path):
    """--loss lm (the paper's text-to-text loss): the logged loss is the label word's
    cross-entropy over the whole vocabulary, and it falls."""
    cfg = TrainConfig(steps=30, batch_size=8, prompt_length=4, optimizer="adamw", lr=0.3, eval_every=30, loss="lm")
    result = train(learnable_llama(), toy_task(), cfg, tmp_path / "out", progress=False)
    curve = losses(tmp_path / "out")
    first, last = sum(curve[:5]) / 5, sum(curve[-5:]) / 5
    assert first > 2.0 and last < first - 1.0, (first, last)  # over ~100 words, not 2 labels
    assert result.best.metrics["accuracy"] >= 0.75
    assert load_prompt(tmp_path / "out" / "best").training["loss"] == "lm"


def test_t5_trains_a_few_steps(tmp_path):
    cfg = TrainConfig(steps=3, batch_size=4, prompt_length=3, eval_every=3)
    t5, task = tiny_t5(), toy_task()
    result = train(t5, task, cfg, tmp_path / "out", progress=False)
    curve = losses(tmp_path / "out")
    assert len(curve) == 3 and all(0 < x < 100 for x in curve)
    assert result.best.model.architecture == "T5ForConditionalGeneration"
    assert result.best.weight.shape == (3, 32)
    # The reported dev accuracy is the best prompt's, recomputed here from its predictions.
    dev = task.load("dev")
    preds, _ = predict(PromptedLM(t5), result.best.weight, task, dev)
    assert result.best.metrics["accuracy"] == pytest.approx(sum(p == e.target for p, e in zip(preds, dev)) / len(dev))
    assert (tmp_path / "out" / "curve.png").read_bytes()[:8] == PNG_MAGIC


def test_prompt_average_by_hand():
    average = PromptAverage(torch.zeros(1, 2), decay=0.5)
    average.update(torch.ones(1, 2), step=1)  # decay min(0.5, 2/11) = 2/11
    assert torch.allclose(average.value, torch.full((1, 2), 9 / 11))
    average.update(torch.full((1, 2), 3.0), step=100)  # decay 0.5
    assert torch.allclose(average.value, torch.full((1, 2), 0.5 * 9 / 11 + 1.5))


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_the_kept_prompt_is_the_average_or_the_raw_prompt(tmp_path, ema):
    cfg = TrainConfig(steps=4, batch_size=4, prompt_length=4, eval_every=4, ema=ema, embed_step=2)
    result = train(learnable_llama(), toy_task(), cfg, tmp_path / "out", progress=False)
    raw = load_file(tmp_path / "out" / "checkpoint" / "prompt" / "prompt.safetensors")["prompt"]
    state = load_file(tmp_path / "out" / "checkpoint" / "optimizer.safetensors")
    if ema:
        assert torch.equal(result.best.weight, state["average"]) and not torch.allclose(result.best.weight, raw)
    else:
        assert torch.equal(result.best.weight, raw) and "average" not in state
    assert result.best.training["ema"] == ema


def test_resume_with_another_ema_setting_is_a_config_error(tmp_path):
    train(
        tiny_llama(),
        toy_task(),
        TrainConfig(steps=1, batch_size=4, prompt_length=4, ema=0.0),
        tmp_path / "out",
        progress=False,
    )
    with pytest.raises(ConfigError, match="--ema"):
        train(
            tiny_llama(),
            toy_task(),
            TrainConfig(steps=2, batch_size=4, prompt_length=4),
            tmp_path / "out",
            resume=True,
            progress=False,
        )


def test_length_scaled_lr_values():
    assert effective_lr(TrainConfig(prompt_length=80, length_scaled_lr=True)) == pytest.approx(0.15)  # 0.3 * sqrt(1/4)
    assert effective_lr(TrainConfig(prompt_length=5, length_scaled_lr=True)) == 0.3  # shorter prompts: unchanged
    assert effective_lr(TrainConfig(prompt_length=80)) == 0.3  # off by default
    assert effective_lr(TrainConfig(method="lora", prompt_length=80, length_scaled_lr=True)) == 1e-3  # prompts only


def test_length_scaled_lr_is_the_lr_the_optimizer_steps_with(tmp_path):
    """A 45-token prompt with --length-scaled-lr at lr 0.3 trains exactly as one at lr 0.2 without it."""
    common = dict(steps=3, batch_size=4, prompt_length=45, optimizer="adamw", eval_every=3, ema=0.0, embed_step=0)
    scaled = train(
        learnable_llama(), toy_task(), TrainConfig(lr=0.3, length_scaled_lr=True, **common), tmp_path / "a",
        progress=False,
    )
    plain = train(learnable_llama(), toy_task(), TrainConfig(lr=0.2, **common), tmp_path / "b", progress=False)
    other = train(learnable_llama(), toy_task(), TrainConfig(lr=0.3, **common), tmp_path / "c", progress=False)
    assert torch.allclose(scaled.best.weight, plain.best.weight, atol=1e-6)
    assert not torch.allclose(scaled.best.weight, other.best.weight, atol=1e-3)
    assert scaled.best.training["effective_lr"] == pytest.approx(0.2)
