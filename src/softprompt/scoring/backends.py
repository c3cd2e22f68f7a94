"""What every scoring backend computes, and the row grouping of backends without a per-row cache.

`PromptedLM` picks one backend when it is built and keeps the backend-independent maths (the
loss objectives, score formatting); a backend computes the model-facing quantities:

  * fast.py (decoder-only): the prompt's key/value cache, computed once and shared by rows;
  * plain.py (decoder-only): prepend the prompt and call the model as Hugging Face does;
  * seq2seq.py (encoder-decoder, T5): the prompt goes in front of the encoder input.

Tests check that all three match references computed one example at a time.

Mixed-task batches (serving) give every row its own prompt (the `*_rows` operations). The fast
backend answers them in one pass (see fast.py); the others group rows by prompt length and run
one pass per length (`by_prompt_length`), since stacked prompts must have one length.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch

from softprompt.batching import Batch
from softprompt.scoring.candidates import Candidates
from softprompt.scoring.prepared import PreparedPrompt

Inputs = Sequence[Sequence[int]]  # B token-id lists


class Backend(Protocol):
    """The model-facing operations of one way of running a prompted frozen model.

    Prompts arrive prepared by this backend's own `prepare` (or with `cache` None, which a
    backend that keeps a cache fills itself). Candidate scores are differentiable in the
    prompt; the caller turns gradients off for evaluation.
    """

    def prepare(self, prompt: torch.Tensor) -> PreparedPrompt:
        """(P, H) prompt -> the prompt with what this backend precomputes for it."""
        ...

    def lm_loss(self, prompt: PreparedPrompt, batch: Batch) -> torch.Tensor:
        """Mean cross-entropy over the target tokens of `batch`."""
        ...

    def candidate_logprobs(self, prompt: PreparedPrompt, inputs: Inputs, candidates: Candidates) -> torch.Tensor:
        """(B, K) sum log-probabilities of each input's candidates, -inf past its K_b."""
        ...

    def candidate_logprobs_rows(
        self, prompts: Sequence[PreparedPrompt], inputs: Inputs, candidates: Candidates
    ) -> torch.Tensor | list[torch.Tensor]:
        """`candidate_logprobs` with row b under `prompts[b]`: a (B, K) grid or B rows of scores."""
        ...

    def generate(self, prompt: PreparedPrompt, inputs: Inputs, max_new_tokens: int) -> list[list[int]]:
        """Greedy continuations (token ids, EOS excluded) of each input."""
        ...

    def generate_rows(self, prompts: Sequence[PreparedPrompt], inputs: Inputs, max_new_tokens: int) -> list[list[int]]:
        """`generate` with row b under `prompts[b]`."""
        ...


def by_prompt_length(
    prompts: Sequence[PreparedPrompt],
    inputs: Inputs,
    candidates: Candidates | None,
    run: Callable[[torch.Tensor, Inputs, Candidates | None], Sequence],
) -> list:
    """Run `run(prompt (G, P, H), inputs, candidates)` once per group of rows whose prompts
    have one length, and put the per-row results back in row order."""
    groups: dict[int, list[int]] = {}
    for b, prompt in enumerate(prompts):
        groups.setdefault(prompt.length, []).append(b)
    out: list = [None] * len(prompts)
    for rows in groups.values():
        stacked = torch.stack([prompts[b].weight for b in rows])
        cands = [candidates[b] for b in rows] if candidates is not None else None
        for b, result in zip(rows, run(stacked, [inputs[b] for b in rows], cands)):
            out[b] = result
    return out


class StackedPromptBackend:
    """The half of a backend without a prompt cache (plain, seq2seq): a prompt is only its
    weight, and mixed-task rows run once per prompt length with the prompts stacked (G, P, H).
    Subclasses implement `_candidates(prompt, inputs, candidates)` and
    `_generate(prompt, inputs, max_new_tokens)` for a (P, H) or (B, P, H) prompt."""

    def __init__(self, lm) -> None:
        self.lm = lm
        self.model = lm.model

    def prepare(self, prompt: torch.Tensor) -> PreparedPrompt:
        return PreparedPrompt(prompt)  # nothing to precompute

    def candidate_logprobs(self, prompt: PreparedPrompt, inputs: Inputs, candidates: Candidates) -> torch.Tensor:
        return self._candidates(prompt.weight, inputs, candidates)

    def candidate_logprobs_rows(
        self, prompts: Sequence[PreparedPrompt], inputs: Inputs, candidates: Candidates
    ) -> list[torch.Tensor]:
        return by_prompt_length(prompts, inputs, candidates, self._candidates)

    def generate(self, prompt: PreparedPrompt, inputs: Inputs, max_new_tokens: int) -> list[list[int]]:
        return self._generate(prompt.weight, inputs, max_new_tokens)

    def generate_rows(self, prompts: Sequence[PreparedPrompt], inputs: Inputs, max_new_tokens: int) -> list[list[int]]:
        return by_prompt_length(prompts, inputs, None, lambda p, i, _: self._generate(p, i, max_new_tokens))
