"""prepend.py: where a prompt meets the input."""

from __future__ import annotations

import pytest
import torch

from softprompt.prepend import IGNORE, extend_mask, prepend_prompt

B, T, P, H = 3, 5, 4, 8


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    embeds = torch.randn(B, T, H, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    labels = torch.tensor(
        [[IGNORE, IGNORE, 7, 8, 9], [IGNORE, 4, 5, IGNORE, IGNORE], [3, IGNORE, IGNORE, IGNORE, IGNORE]]
    )
    prompt = torch.randn(P, H, generator=g)
    return prompt, embeds, mask, labels


def test_shared_prompt_is_prepended_to_every_row(batch):
    prompt, embeds, mask, labels = batch
    out, out_mask, out_labels = prepend_prompt(prompt, embeds, mask, labels)
    assert out.shape == (B, P + T, H)
    assert out_mask.shape == (B, P + T)
    assert out_labels.shape == (B, P + T)
    for row in range(B):
        assert torch.equal(out[row, :P], prompt)
        assert torch.equal(out[row, P:], embeds[row])


def test_mask_is_one_over_prompt_and_unchanged_after(batch):
    prompt, embeds, mask, labels = batch
    _, out_mask, _ = prepend_prompt(prompt, embeds, mask, labels)
    assert torch.equal(out_mask[:, :P], torch.ones(B, P, dtype=mask.dtype))
    assert torch.equal(out_mask[:, P:], mask)
    assert out_mask.dtype == mask.dtype


def test_labels_are_ignored_over_prompt(batch):
    prompt, embeds, mask, labels = batch
    _, _, out_labels = prepend_prompt(prompt, embeds, mask, labels)
    assert (out_labels[:, :P] == IGNORE).all()
    assert torch.equal(out_labels[:, P:], labels)
    assert out_labels.dtype == labels.dtype


def test_labels_none_stays_none(batch):
    prompt, embeds, mask, _ = batch
    _, _, out_labels = prepend_prompt(prompt, embeds, mask)
    assert out_labels is None


def test_per_row_prompts(batch):
    _, embeds, mask, labels = batch
    prompts = torch.randn(B, P, H, generator=torch.Generator().manual_seed(1))
    out, out_mask, out_labels = prepend_prompt(prompts, embeds, mask, labels)
    assert out.shape == (B, P + T, H)
    for row in range(B):
        assert torch.equal(out[row, :P], prompts[row])
        assert torch.equal(out[row, P:], embeds[row])
    assert (out_mask[:, :P] == 1).all() and (out_labels[:, :P] == IGNORE).all()


def test_prompt_is_cast_to_embedding_dtype(batch):
    prompt, embeds, mask, _ = batch
    out, _, _ = prepend_prompt(prompt, embeds.to(torch.bfloat16), mask)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out[0, :P], prompt.to(torch.bfloat16))


def test_gradient_flows_to_prompt_only_through_prompt_positions(batch):
    prompt, embeds, mask, _ = batch
    prompt = prompt.clone().requires_grad_(True)
    out, _, _ = prepend_prompt(prompt, embeds, mask)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
    (out * weights).sum().backward()
    # d/d prompt of sum(out * w) is the sum over rows of w at the prompt positions.
    assert torch.allclose(prompt.grad, weights[:, :P].sum(0))


def test_extend_mask():
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    out = extend_mask(mask, 2)
    assert torch.equal(out, torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]]))
    assert out.dtype == mask.dtype
    assert torch.equal(extend_mask(mask, 0), mask)
