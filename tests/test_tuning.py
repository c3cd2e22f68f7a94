"""--method prompt | model | lora | zero-shot: each trains by the same loop on a tiny random
decoder and T5, writes the same result, and `eval` of its output reproduces the dev score."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from helpers import learnable_llama, run_cli, tiny_t5, toy_rows, toy_task, write_csv

import softprompt.cli as cli
from softprompt.config import TrainConfig
from softprompt.errors import ConfigError
from softprompt.io import load_checkpoint
from softprompt.models import loading
from softprompt.train import train
from softprompt.tuning import weight_tuning

METHODS = ("prompt", "model", "lora", "zero-shot")
BUILDERS = {"decoder": learnable_llama, "t5": tiny_t5}
LR = {"prompt": "0.3", "model": "3e-3", "lora": "1e-2", "zero-shot": "0.3"}  # tiny models learn in a few steps


@pytest.fixture(params=list(BUILDERS))
def tiny(request, monkeypatch):
    """Every command loads (a fresh copy of) the tiny model, as each command is its own process,
    except a folder a model-tuning run wrote (loaded from disk)."""
    lm = BUILDERS[request.param]()

    def load(name, precision):
        if name and Path(name).is_dir():
            return loading.load_model(name, "fp32", device="cpu")
        return copy.deepcopy(lm)

    monkeypatch.setattr(cli.runtime, "load_model", load)
    return lm


def cli_train(tmp_path, out, method, *extra):
    train_csv = write_csv(tmp_path / "train.csv", toy_rows(40, seed=0))
    dev_csv = write_csv(tmp_path / "dev.csv", toy_rows(16, seed=1))
    args = ["train", "--task", "toy", "--train-file", train_csv, "--dev-file", dev_csv, "--text-field", "sentence"]
    args += ["--labels", "neg=negative,pos=positive", "--template", "{sentence}", "--steps", "6", "--batch-size", "8"]
    args += ["--prompt-length", "4", "--eval-every", "3", "--method", method, "--lr", LR[method], "--out", out]
    return [*args, *extra], dev_csv


@pytest.mark.parametrize("method", METHODS)
def test_each_method_trains_writes_the_same_result_and_eval_reproduces_its_dev_score(
    tiny, method, tmp_path, capsys
):
    args, dev_csv = cli_train(tmp_path, tmp_path / "run", method)
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    assert f"{method}: " in out and "trainable parameters" in out and "peak memory" in out
    meta = json.loads((tmp_path / "run" / "best" / "prompt.json").read_text())
    assert {"accuracy", "step", "dev_examples"} <= set(meta["metrics"])
    training = meta["training"]
    assert training["method"] == method and training["bytes_per_task"] > 0
    expected_trainable = {
        "prompt": 4 * tiny.hidden_size,
        "model": sum(p.numel() for p in tiny.model.parameters()),
        "zero-shot": 0,
    }
    if method in expected_trainable:
        assert training["trainable_params"] == expected_trainable[method]
    else:  # LoRA: rank 8 adapters, far fewer than the model's weights
        assert 0 < training["trainable_params"] < expected_trainable["model"] / 2
    report = tmp_path / "eval.json"
    code, out, err = run_cli(
        capsys, "eval", "--prompt", tmp_path / "run", "--dev-file", dev_csv, "--text-field", "sentence",
        "--output", report,
    )
    assert code == 0, err
    assert json.loads(report.read_text())["metrics"]["accuracy"] == pytest.approx(meta["metrics"]["accuracy"])


@pytest.mark.parametrize("method", ["model", "lora"])
def test_weight_methods_lower_the_loss_and_change_only_their_weights(tiny, method, tmp_path):
    cfg = TrainConfig(method=method, steps=8, batch_size=8, eval_every=8, lr=float(LR[method]), checkpoint_every=4)
    result = train(tiny, toy_task(), cfg, tmp_path / "run", progress=False)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    assert sum(losses[-3:]) < sum(losses[:3])
    weights = load_checkpoint(tmp_path / "run" / "checkpoint").weights
    trained = dict(tiny.model.named_parameters())
    if method == "model":
        assert set(weights) == set(dict(tiny.model.named_parameters()))
        assert any(not torch.allclose(weights[n], trained[n].float()) for n in weights)
    else:
        assert weights and all("lora_" in n for n in weights)
        assert any(n.endswith("lora_B.default.weight") and weights[n].abs().sum() > 0 for n in weights)
    assert result.trainable_params == sum(v.numel() for v in weights.values())


@pytest.mark.parametrize("method", ["model", "lora"])
def test_a_weight_method_trains_a_copy_unless_the_caller_gives_the_model_up(tiny, method, tmp_path):
    before = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    cfg = TrainConfig(method=method, steps=3, batch_size=8, eval_every=3, lr=float(LR[method]))
    train(tiny, toy_task(), cfg, tmp_path / "copy", progress=False)
    after = tiny.model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(before[k], after[k]) for k in before)  # a study's next cell
    assert weight_tuning(tiny, cfg).lm.model is not tiny.model
    tuning = weight_tuning(tiny, cfg, in_place=True)  # `softprompt train`: one run, one load, no copy
    assert tuning.lm.model is tiny.model
    if method == "model":
        assert {p.data_ptr() for p in tuning.parameters()} == {p.data_ptr() for p in tiny.model.parameters()}
    else:
        assert any("lora_" in n for n, _ in tiny.model.named_parameters())  # injected into the loaded model


def test_training_in_place_drops_the_copy_from_the_estimate():
    from softprompt.models import memory

    params = 1_777_088_000  # Qwen2.5-Coder 1.5B as loaded, fp32 frozen weights
    for method, copy_bytes in (("model", 4 * params), ("lora", 4 * params)):
        kept, given_up = (memory.estimate(params, 4, method, checkpointing=True, in_place=p) for p in (False, True))
        assert kept - given_up == copy_bytes
    in_place = memory.estimate(params, 4, "model", checkpointing=True, in_place=True)
    assert 17.4 * memory.GIB <= in_place < 20 * memory.GIB  # measured peak 17.4 GiB; fits a 24 GiB machine
    assert memory.estimate(params, 2, "model", in_place=True) == memory.estimate(params, 2, "model") - 2 * params


def test_a_weight_method_resumes_from_its_checkpoint(tiny, tmp_path):
    cfg = TrainConfig(method="lora", steps=4, batch_size=8, eval_every=4, lr=1e-2, checkpoint_every=2)
    train(tiny, toy_task(), cfg, tmp_path / "once", progress=False)
    train(tiny, toy_task(), TrainConfig(**{**cfg.__dict__, "steps": 2}), tmp_path / "twice", progress=False)
    train(tiny, toy_task(), cfg, tmp_path / "twice", resume=True, progress=False)
    once, twice = (load_checkpoint(tmp_path / name / "checkpoint").weights for name in ("once", "twice"))
    assert all(torch.allclose(once[n], twice[n], atol=1e-6) for n in once)


def test_resuming_with_another_method_is_refused(tiny, tmp_path):
    train(tiny, toy_task(), TrainConfig(steps=2, batch_size=8, eval_every=2), tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match="--method 'prompt'"):
        train(tiny, toy_task(), TrainConfig(method="lora", steps=4, batch_size=8), tmp_path / "run", resume=True)


def test_unknown_method_and_bad_lora_targets_are_one_line_errors(tiny, tmp_path, capsys):
    args, _ = cli_train(tmp_path, tmp_path / "a", "prompt")
    args[args.index("--method") + 1] = "adapters"
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and "--method 'adapters'" in err and len(err.strip().splitlines()) == 1
    args, _ = cli_train(tmp_path, tmp_path / "b", "lora", "--lora-targets", "no_such_proj")
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and "--lora-targets" in err and len(err.strip().splitlines()) == 1


def test_a_model_too_large_for_the_method_is_refused_before_loading_with_its_estimate(tmp_path, capsys, monkeypatch):
    from softprompt.models import memory

    folder = tmp_path / "saved-model"
    learnable_llama().model.save_pretrained(folder)
    capsys.readouterr()  # transformers' progress bar while saving
    loads = []
    monkeypatch.setattr(cli.runtime, "load_model", lambda name, precision: loads.append(name))
    need_prompt = memory.estimate(loading.parameter_count(str(folder)), 4, "prompt")
    monkeypatch.setattr(memory, "available", lambda device="cpu": need_prompt + 1)  # room for a prompt, not a model
    args, _ = cli_train(tmp_path, tmp_path / "run", "model", "--model", folder)
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and not loads and not (tmp_path / "run").exists()
    assert "--method model" in err and "needs about" in err and "available" in err and "--no-memory-check" in err
    assert len(err.strip().splitlines()) == 1


def test_the_estimate_orders_the_methods_by_what_they_hold():
    from softprompt.models import memory

    params = 1_500_000_000
    prompt, lora, model = (memory.estimate(params, 2, m) for m in ("prompt", "lora", "model"))
    assert prompt < lora < model
    assert memory.estimate(params, 2, "model", "adamw") - model > 7 * params  # two fp32 moments
    assert memory.estimate(params, 4, "prompt") > memory.estimate(params, 2, "prompt")


def test_a_tuned_result_is_not_taken_for_a_prompt_where_only_prompts_make_sense(tiny, tmp_path, capsys):
    from softprompt.io import load_prompt

    cfg = TrainConfig(method="model", steps=1, batch_size=8, eval_every=1)
    train(tiny, toy_task(), cfg, tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match="a --method model result"):
        load_prompt(tmp_path / "run" / "best")  # serving, libraries, transfer: a prompt is expected
    code, _, err = run_cli(capsys, "export-peft", "--prompt", tmp_path / "run", "--out", tmp_path / "peft")
    assert code == 2 and "--method model result" in err and not (tmp_path / "peft").exists()


@pytest.mark.parametrize("method", ["prompt", "model"])
def test_activation_checkpointing_trains_the_same_and_leaves_the_model_as_it_was(tiny, method, tmp_path):
    from softprompt.io import load_checkpoint as read

    runs = {}
    for on in (False, True):
        cfg = TrainConfig(method=method, steps=3, batch_size=8, eval_every=3, lr=float(LR[method]),
                          activation_checkpointing=on, ema=0.0)
        train(tiny, toy_task(), cfg, tmp_path / str(on), progress=False)
        runs[on] = read(tmp_path / str(on) / "checkpoint")
    if method == "prompt":
        assert torch.allclose(runs[False].prompt.weight, runs[True].prompt.weight, atol=1e-5)
    else:
        before, after = runs[False].weights, runs[True].weights
        assert all(torch.allclose(before[n], after[n], atol=1e-5) for n in before)
    assert not any(getattr(m, "gradient_checkpointing", False) or m.training for m in tiny.model.modules())
