"""`PromptedLM`: a frozen model plus what a soft prompt needs: training loss, label scores, generation.

It picks a backend once (fast.py, plain.py or seq2seq.py; see backends.py) and holds what does
not depend on it: the loss objectives and the formatting of scores.

Candidate scores are differentiable (`candidate_logprobs`): evaluation ranks with them under
no_grad (`score`), and the rank-classification training loss (`rank_loss`) is a cross-entropy
over the same scores, so training optimises what evaluation decides by.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from softprompt.batching import Batch, LossCounts, leading_special_ids
from softprompt.models.loading import LoadedModel
from softprompt.scoring.backends import Backend, Inputs
from softprompt.scoring.candidates import Candidates, candidate_lengths, pairs
from softprompt.scoring.fast import FastBackend
from softprompt.scoring.plain import PlainBackend
from softprompt.scoring.prepared import PreparedPrompt
from softprompt.scoring.seq2seq import Seq2SeqBackend

Prompt = torch.Tensor | PreparedPrompt  # a (P, H) prompt, or one `prepare` made


class PromptedLM:
    """A frozen model plus the computations a soft prompt needs.

    Args:
        lm: The loaded, frozen model.
        fast: Use the fast backend where the architecture allows (decoder-only).
    """

    def __init__(self, lm: LoadedModel, fast: bool = True) -> None:
        self.lm = lm
        self.model = lm.model
        backend = Seq2SeqBackend if lm.is_encoder_decoder else FastBackend if fast else PlainBackend
        self.backend: Backend = backend(lm)  # chosen once; every operation below delegates to it
        self.fast = isinstance(self.backend, FastBackend)
        self.lead_ids = [] if lm.is_encoder_decoder else leading_special_ids(lm.tokenizer)

    def with_lead(self, prompt: torch.Tensor) -> torch.Tensor:
        """`prompt` (P, H) behind the embeddings of the tokens the tokenizer starts every text
        with (Gemma's <bos>; none for SmolLM2, Qwen and T5): (L+P, H). A model trained with a
        <bos> first ignores most of what comes before it (Gemma 3 270M, a fact given before
        <bos> and asked after it: 21 nats on the answer; given after it: 3.1), so the prompt
        goes after. Looked up on every call (one row; model tuning trains it): the saved prompt
        stays (P, H)."""
        if not self.lead_ids:
            return prompt
        lead = self.lm.embed(torch.tensor([self.lead_ids], device=self.lm.device))[0]
        return torch.cat([lead.to(prompt.device, prompt.dtype), prompt], dim=0)

    def prepare(self, prompt: torch.Tensor) -> PreparedPrompt:
        """`prompt` (P, H) with what the backend precomputes for it (the fast backend: its
        key/value cache), behind the tokenizer's leading tokens (`with_lead`). Prepare once,
        pass it to `score`/`generate` for every batch."""
        return self.backend.prepare(self.with_lead(prompt))

    def _prepared(self, prompt: Prompt) -> PreparedPrompt:
        return prompt if isinstance(prompt, PreparedPrompt) else self.prepare(prompt)

    def _prepared_rows(self, prompts: Sequence[Prompt]) -> list[PreparedPrompt]:
        """One PreparedPrompt per row; rows passing the same tensor share one (prepared once)."""
        seen: dict[int, PreparedPrompt] = {}
        for prompt in prompts:
            if id(prompt) not in seen:
                seen[id(prompt)] = self._prepared(prompt)
        return [seen[id(prompt)] for prompt in prompts]

    # -- training loss --------------------------------------------------------------------

    def loss(
        self,
        prompt: Prompt,
        batch: Batch,
        objective: str = "lm",
        length_normalize: bool = False,
        whole: LossCounts | None = None,
    ) -> torch.Tensor:
        """Training loss of `batch` given `prompt` (P, H).

        objective "lm": mean cross-entropy over the target tokens (the paper's text-to-text
        loss). "rank": rows with candidates (`batch.gold` >= 0) take the cross-entropy over
        their candidates' scores (`rank_loss`), the other rows (generation) the "lm" loss,
        weighted by row counts. "rank+lm": the "rank" loss plus the "lm" loss of every row.
        On ranked rows both come from one scoring pass: the gold candidate is the target.

        `whole`: the counts (`batching.loss_counts`) of a larger batch that `batch` is a part
        of. Every mean is then taken over the whole batch, so the losses of its parts add up
        to the whole batch's loss (data-parallel workers each hold a part). Without it, the
        scale factors below are exactly 1 and the loss is `batch`'s own.
        """
        own = batch.loss_counts()
        whole = whole or own
        if objective == "lm" or batch.gold is None or whole.ranked == 0:
            return self.lm_loss(prompt, batch) * (own.tokens / whole.tokens)
        prompt = self._prepared(prompt)
        ranked = (batch.gold >= 0).nonzero().flatten().tolist()
        rest = sorted(set(range(batch.size)) - set(ranked))
        rank_term = gold_lp_sum = torch.zeros((), device=batch.labels.device)
        if ranked:
            inputs, choices = [batch.inputs[i] for i in ranked], [batch.choices[i] for i in ranked]
            rank_term, gold_lp, _ = self._rank_terms(prompt, inputs, choices, batch.gold[ranked], length_normalize)
            gold_lp_sum = gold_lp.sum()
        rest_term = self.lm_loss(prompt, batch.select(rest)) if rest else rank_term.new_zeros(())
        if objective == "rank":
            rest_share = rest_term * (own.rest_tokens / whole.rest_tokens) if rest else rest_term
            return (len(ranked) * rank_term + whole.rest_rows * rest_share) / whole.rows
        # "lm" over all rows = token-weighted mean of the ranked rows' gold log-likelihoods and the rest's.
        lm_term = (-gold_lp_sum + rest_term * own.rest_tokens) / (whole.gold_tokens + whole.rest_tokens)
        return rank_term * len(ranked) / whole.rows + lm_term

    def rank_loss(
        self, prompt: Prompt, inputs: Inputs, candidates: Candidates, gold: torch.Tensor, length_normalize: bool = False
    ) -> torch.Tensor:
        """Cross-entropy of the gold candidate `gold[b]` among input b's candidates, each
        scored by its log-likelihood as rank classification scores it."""
        return self._rank_terms(prompt, inputs, candidates, gold, length_normalize)[0]

    def _rank_terms(self, prompt: Prompt, inputs, candidates, gold: torch.Tensor, length_normalize: bool):
        """`rank_loss`, plus each input's gold candidate log-likelihood and token count
        (its "lm" terms), from one scoring pass."""
        scores = self.candidate_logprobs(prompt, inputs, candidates)  # (B, K)
        lengths = candidate_lengths(candidates, scores.device)
        gold = gold.to(scores.device)
        rank_term = F.cross_entropy(scores / lengths if length_normalize else scores, gold)
        picked = torch.arange(len(inputs), device=scores.device)
        return rank_term, scores[picked, gold], lengths[picked, gold]

    def lm_loss(self, prompt: Prompt, batch: Batch) -> torch.Tensor:
        """Mean cross-entropy over target tokens of `batch` given `prompt` (P, H)."""
        return self.backend.lm_loss(self._prepared(prompt), batch)

    # -- rank classification --------------------------------------------------------------

    @torch.no_grad()
    def score(self, prompt: Prompt, inputs: Inputs, candidates: Candidates) -> list[list[tuple[float, int]]]:
        """Log-likelihood of every candidate continuation of every input.

        Args:
            prompt: (P, H) soft prompt, or `prepare(prompt)` to reuse across batches.
            inputs: B token-id lists.
            candidates: For each input, K_b candidate token-id lists.

        Returns:
            For each input, a (sum log-prob, token count) pair per candidate.
        """
        return pairs(self.candidate_logprobs(prompt, inputs, candidates), candidates)

    def candidate_logprobs(self, prompt: Prompt, inputs: Inputs, candidates: Candidates) -> torch.Tensor:
        """(B, K) sum log-probabilities of each input's candidates, -inf past its K_b;
        differentiable in `prompt` (pass the raw prompt, not a prepared one, when training)."""
        return self.backend.candidate_logprobs(self._prepared(prompt), inputs, candidates)

    @torch.no_grad()
    def score_rows(
        self, prompts: Sequence[Prompt], inputs: Inputs, candidates: Candidates
    ) -> list[list[tuple[float, int]]]:
        """`score` for a batch whose row b carries its own prompt `prompts[b]` (P_b, H).

        Rows may share a prompt (pass the same tensor or PreparedPrompt) and prompts may
        differ in length.
        """
        scores = self.backend.candidate_logprobs_rows(self._prepared_rows(prompts), inputs, candidates)
        return pairs(scores, candidates)

    # -- generation -----------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, prompt: Prompt, inputs: Inputs, max_new_tokens: int) -> list[list[int]]:
        """Greedy continuations (token ids, EOS excluded) of each input."""
        return self.backend.generate(self._prepared(prompt), inputs, max_new_tokens)

    @torch.no_grad()
    def generate_rows(self, prompts: Sequence[Prompt], inputs: Inputs, max_new_tokens: int) -> list[list[int]]:
        """`generate` for a batch whose row b carries its own prompt `prompts[b]` (P_b, H)."""
        return self.backend.generate_rows(self._prepared_rows(prompts), inputs, max_new_tokens)
