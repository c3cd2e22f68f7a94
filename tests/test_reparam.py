"""reparam.py: the residual reparameterisation trains, folds to a plain (P, H) prompt that
scores exactly as the reparameterised forward does, resumes exactly, and saves plain prompts."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from helpers import learnable_llama, toy_task
from softprompt.batching import Encoder
from softprompt.errors import ConfigError
from softprompt.io import load_prompt
from softprompt.reparam import PlainPrompt, ResidualPrompt, make_params
from softprompt.scoring import PromptedLM
from softprompt.train import TrainConfig, train


def trained_residual(hidden: int = 32, length: int = 4) -> ResidualPrompt:
    """A residual prompt whose MLP has moved off its initialisation (the LayerNorm gain is non-zero)."""
    params = ResidualPrompt(torch.randn(length, hidden, generator=torch.Generator().manual_seed(3)) * 0.2, 16, seed=5)
    with torch.no_grad():
        for p in params.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.1)
    return params


def losses(out) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "log.jsonl").read_text().splitlines() if '"loss"' in line]


def test_residual_starts_as_the_initial_prompt_and_plain_is_the_parameter():
    weight = torch.randn(4, 32)
    assert torch.equal(ResidualPrompt(weight, 8).fold(), weight)  # zero LayerNorm gain: P' = P
    plain = make_params(weight, "none", 8)
    assert isinstance(plain, PlainPrompt) and [n for n, _ in plain.named_parameters()] == ["base"]
    assert isinstance(make_params(weight, "residual", 8), ResidualPrompt)


def test_residual_is_the_papers_formula():
    params = trained_residual()
    p = params.base.detach()
    hidden = torch.relu(p @ params.down.weight.T + params.down.bias) @ params.up.weight.T + params.up.bias
    normed = (hidden - hidden.mean(-1, keepdim=True)) / torch.sqrt(hidden.var(-1, unbiased=False, keepdim=True) + 1e-5)
    expected = p + normed * params.norm.weight + params.norm.bias
    assert torch.allclose(params.fold(), expected, atol=1e-5)
    assert not torch.allclose(params.fold(), p, atol=1e-3)  # the MLP does change the prompt


def test_the_same_seed_gives_the_same_mlp():
    weight = torch.randn(4, 32)
    a, b, c = ResidualPrompt(weight, 8, seed=1), ResidualPrompt(weight, 8, seed=1), ResidualPrompt(weight, 8, seed=2)
    assert torch.equal(a.down.weight, b.down.weight) and not torch.equal(a.down.weight, c.down.weight)


def test_the_folded_prompt_scores_exactly_as_the_reparameterised_forward():
    lm = learnable_llama()
    plm, params, task = PromptedLM(lm), trained_residual(lm.hidden_size), toy_task()
    enc = Encoder(lm.tokenizer, lm.is_encoder_decoder, 64)
    batch = enc.collate([enc.encode(task, e) for e in task.load("dev")[:6]])
    folded = params.fold().clone()
    with torch.no_grad():
        live = plm.loss(params(), batch, "rank+lm")
        kept = plm.loss(folded, batch, "rank+lm")
    assert torch.equal(live, kept)
    inputs, candidates = batch.inputs, batch.choices
    assert plm.score(params(), inputs, candidates) == plm.score(folded, inputs, candidates)


@pytest.fixture(scope="module")
def residual_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("residual") / "out"
    cfg = TrainConfig(steps=30, batch_size=8, prompt_length=4, reparam="residual", reparam_bottleneck=16, eval_every=10)
    return out, train(learnable_llama(), toy_task(), cfg, out, progress=False)


def test_training_with_the_residual_reparam_lowers_the_loss(residual_run):
    out, result = residual_run
    curve = losses(out)
    first, last = sum(curve[:5]) / 5, sum(curve[-5:]) / 5
    assert last < first / 2, (first, last)
    assert result.best.metrics["accuracy"] >= 0.75  # chance is 0.5


def test_the_saved_prompts_are_plain(residual_run):
    out, result = residual_run
    for folder in ("best", "embedding", "checkpoint/prompt"):
        assert list(load_file(out / folder / "prompt.safetensors")) == ["prompt"]
        assert load_prompt(out / folder).weight.shape == (4, 32)
    assert result.best.training["reparam"] == "residual"
    state = load_file(out / "checkpoint" / "optimizer.safetensors")
    mlp = {k for k in state if k.startswith("reparam/")}
    assert mlp == {f"reparam/{n}" for n in ("base", "down.weight", "down.bias", "up.weight", "up.bias")} | {
        "reparam/norm.weight",
        "reparam/norm.bias",
    }
    # The checkpoint's prompt is the fold of its parameters.
    params = ResidualPrompt(torch.zeros(4, 32), 16)
    params.load_state_dict({k[len("reparam/") :]: v for k, v in state.items() if k.startswith("reparam/")})
    assert torch.equal(params.fold(), load_prompt(out / "checkpoint" / "prompt").weight)
    # The best prompt scores on dev as reported: it is a plain prompt for evaluate().
    assert result.best.metrics["accuracy"] == max(
        json.loads(line)["eval"]["accuracy"] for line in (out / "log.jsonl").read_text().splitlines() if "eval" in line
    )


@pytest.mark.parametrize("optimizer", ["adafactor", "adamw"])
def test_resume_with_residual_equals_an_uninterrupted_run(tmp_path, optimizer):
    settings = dict(batch_size=4, prompt_length=4, optimizer=optimizer, eval_every=100, reparam="residual")
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(learnable_llama(), toy_task(), TrainConfig(steps=6, **settings), straight, progress=False)
    train(learnable_llama(), toy_task(), TrainConfig(steps=3, **settings), split, progress=False)
    train(learnable_llama(), toy_task(), TrainConfig(steps=6, **settings), split, resume=True, progress=False)
    a = load_file(straight / "checkpoint" / "optimizer.safetensors")
    b = load_file(split / "checkpoint" / "optimizer.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(load_prompt(straight / "best").weight, load_prompt(split / "best").weight)
    assert losses(straight) == losses(split)


@pytest.mark.parametrize(("first", "second"), [("none", "residual"), ("residual", "none")])
def test_resume_with_another_reparam_is_refused(tmp_path, first, second):
    settings = dict(batch_size=4, prompt_length=4)
    cfg = TrainConfig(steps=1, reparam=first, **settings)
    train(learnable_llama(), toy_task(), cfg, tmp_path / "out", progress=False)
    with pytest.raises(ConfigError, match="--reparam") as err:
        train(
            learnable_llama(),
            toy_task(),
            TrainConfig(steps=2, reparam=second, **settings),
            tmp_path / "out",
            resume=True,
            progress=False,
        )
    assert "\n" not in str(err.value)


def test_bad_reparam_settings_name_the_flag():
    with pytest.raises(ConfigError, match="--reparam 'mlp'"):
        TrainConfig(reparam="mlp")
    with pytest.raises(ConfigError, match="--reparam-bottleneck"):
        TrainConfig(reparam_bottleneck=0)
