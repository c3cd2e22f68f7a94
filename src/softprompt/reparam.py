"""How the trained numbers become the (P, H) prompt: the parameterisation used while training.

`plain` is Lester et al. (2021): the prompt matrix itself is the parameter. `residual` is
Razdaibiedina et al. (2023), "Residual Prompt Tuning": the prompt P passes through a shallow
MLP with a skip connection,

    P' = P + LayerNorm(up(ReLU(down(P))))        # (P, H) -> (P, b) -> (P, H), one MLP shared by all tokens

which makes each token's update depend on the others' and steadies training at high lr. Only
training sees the MLP: `fold()` returns P' as a plain (P, H) matrix, so what is evaluated,
averaged, saved, served and exported is an ordinary prompt and inference costs nothing more.

One departure from the paper: the LayerNorm's gain starts at zero, so P' equals the
initialisation (class labels, vocabulary) at step 0. The paper's unit-scale LayerNorm output
suits T5, whose embeddings are large; SmolLM2's have std 0.14, and a unit-scale random
residual would bury the initial prompt under noise seven times its size.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from softprompt.config import Reparam

class PromptParams(nn.Module):
    """The trained numbers of one prompt. `forward()` gives the (P, H) prompt with its graph;
    `fold()` the same values, detached. `base` is the (P, H) matrix the others act on."""

    base: nn.Parameter

    def fold(self) -> torch.Tensor:
        with torch.no_grad():
            return self().detach()


class PlainPrompt(PromptParams):
    """The prompt is the parameter (the paper's prompt tuning)."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.base = nn.Parameter(weight.detach().clone())

    def forward(self) -> torch.Tensor:  # (P, H)
        return self.base


class ResidualPrompt(PromptParams):
    """P + LayerNorm(up(ReLU(down(P)))), the MLP initialised from `seed` (see the module docstring)."""

    def __init__(self, weight: torch.Tensor, bottleneck: int, seed: int = 0) -> None:
        super().__init__()
        hidden = weight.shape[1]
        self.base = nn.Parameter(weight.detach().clone())
        self.down = nn.Linear(hidden, bottleneck)
        self.up = nn.Linear(bottleneck, hidden)
        self.norm = nn.LayerNorm(hidden)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():  # nn.Linear's default range, from a seeded generator (not the global one)
            for layer in (self.down, self.up):
                bound = 1 / math.sqrt(layer.in_features)
                for p in (layer.weight, layer.bias):
                    p.copy_(torch.rand(p.shape, generator=generator) * 2 * bound - bound)
            self.norm.weight.zero_()  # P' starts as the initial prompt
        self.to(device=weight.device, dtype=weight.dtype)

    def forward(self) -> torch.Tensor:  # (P, H)
        p = self.base
        return p + self.norm(self.up(torch.relu(self.down(p))))


def make_params(weight: torch.Tensor, reparam: str, bottleneck: int, seed: int = 0) -> PromptParams:
    """The trained numbers for initial prompt `weight` (P, H) under parameterisation `reparam`."""
    if Reparam(reparam) is Reparam.RESIDUAL:
        return ResidualPrompt(weight, bottleneck, seed)
    return PlainPrompt(weight)
