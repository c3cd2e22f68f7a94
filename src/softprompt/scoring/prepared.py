"""A prompt ready to run: its (P, H) weight, plus the key/value cache where a backend keeps one."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PreparedPrompt:
    """A soft prompt and what a backend precomputed for it (`PromptedLM.prepare`).

    Prepare a prompt once and pass it to every `score`/`generate` call that uses it: the fast
    backend then computes the prompt's key/value states once, not once per batch. The cache is
    read, never consumed, so one PreparedPrompt serves any number of batches.

    Attributes:
        weight: (P, H) the prompt.
        cache: The prompt's key/value states, batch 1 (fast backend), else None.
    """

    weight: torch.Tensor  # (P, H)
    cache: object | None = None

    @property
    def length(self) -> int:
        return self.weight.shape[0]
