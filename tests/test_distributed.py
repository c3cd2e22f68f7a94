"""Data-parallel training, sharded evaluation and spread cells on 2 gloo workers (loopback).

The multi-process tests start `torchrun` (through `distributed.launch`) in a subprocess with
2 workers running tests/dist_worker.py, at most 2 processes each, bounded in time; the
single-process references run in the test process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import learnable_llama, tiny_llama, toy_task
from softprompt import distributed as dp
from softprompt.batching import Encoded, Encoder

TESTS = Path(__file__).parent
SRC = TESTS.parent / "src"


# -- in process: the loss shares add up to the loss ------------------------------------------------

def _rows(lm):
    task = toy_task()
    enc = Encoder(lm.tokenizer, lm.is_encoder_decoder)
    ranked = [enc.encode(task, e) for e in task.load("train")[:5]]
    generative = [Encoded(enc.input_ids("a b c"), enc.target_ids("great movie", eos=True)),
                  Encoded(enc.input_ids("the movie"), enc.target_ids("awful", eos=True))]
    return enc, [ranked[0], generative[0], ranked[1], ranked[2], generative[1], ranked[3], ranked[4]]


@pytest.mark.parametrize("objective", ["lm", "rank", "rank+lm"])
@pytest.mark.parametrize("length_normalize", [False, True])
@pytest.mark.parametrize("world", [2, 3])
def test_loss_shares_of_the_workers_add_up_to_the_loss_of_the_whole_batch(objective, length_normalize, world):
    from softprompt.scoring import PromptedLM

    lm = tiny_llama()
    plm = PromptedLM(lm)
    enc, rows = _rows(lm)
    for batch_rows in (rows, [r for r in rows if r.choices is not None], [r for r in rows if r.choices is None]):
        prompt = torch.nn.Parameter(torch.randn(3, lm.hidden_size) * 0.1)
        whole = plm.loss(prompt, enc.collate(batch_rows), objective, length_normalize)
        (expected,) = torch.autograd.grad(whole, prompt)
        total = dp.batch_counts(batch_rows)
        shares, grads = [], []
        for rank in range(world):
            mine = dp.shard(batch_rows, dp.Context(rank, world))
            share = dp.shard_loss(plm, prompt, enc.collate(mine) if mine else None, objective, length_normalize, total)
            shares.append(share.detach())
            grads.append(torch.autograd.grad(share, prompt, allow_unused=True)[0])
        assert float(sum(shares)) == pytest.approx(float(whole), abs=1e-6)
        assert torch.allclose(sum(g for g in grads if g is not None), expected, atol=1e-6)


def test_shard_splits_in_order_and_cells_round_robin():
    items = list(range(7))
    assert [dp.shard(items, dp.Context(r, 3)) for r in range(3)] == [[0, 1, 2], [3, 4], [5, 6]]
    assert [dp.cells(items, dp.Context(r, 3)) for r in range(3)] == [[0, 3, 6], [1, 4], [2, 5]]
    assert dp.shard([1], dp.Context(1, 2)) == []
