"""The fast decoder-only backend: a shared prompt key/value cache, the head only where needed.

The prompt's key/value states are computed once (batch 1, `prepare`) and shared by every row:
valid for all of them because rows are right-padded and the prompt comes first. Hidden states
come from the model body, and the output projection runs only where a loss or a score needs it.
Ranking several labels runs the shared input once and scores each label's continuation from
its cache. It computes the same numbers as the plain backend (prepend + full forward).

Mixed-task batches give every row its own prompt: the rows' prompt caches are stacked, padded
after each prompt to the longest and masked there, and each row's input takes positions right
after its own prompt, so one forward pass gives every row exactly what it gets alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from softprompt.batching import Batch, pad_right
from softprompt.models.loading import LoadedModel
from softprompt.prepend import IGNORE, extend_mask
from softprompt.scoring.backends import Inputs
from softprompt.scoring.candidates import Candidates, flat_index, grid
from softprompt.scoring.decoding import DecoderBody
from softprompt.scoring.kv_cache import cat_caches, expand_cache, pad_cache, select_cache
from softprompt.scoring.prepared import PreparedPrompt


class FastBackend:
    """Decoder-only scoring after a prompt key/value cache (see the module docstring)."""

    def __init__(self, lm: LoadedModel) -> None:
        self.lm = lm
        self.decoder = DecoderBody(lm)
        self.config = lm.model.config  # new caches get the layer kinds the model gives its own

    def prepare(self, prompt: torch.Tensor) -> PreparedPrompt:
        """The prompt with its key/value cache, batch 1: (P, H) -> cache over P positions.
        Differentiable in `prompt` (the training loss prepares its prompt on every step).
        An empty prompt (0, H), as model tuning and LoRA use, has no cache: the inputs start at 0."""
        if prompt.shape[0] == 0:
            return PreparedPrompt(prompt, None)
        embeds = prompt.to(self.lm.dtype).unsqueeze(0)  # (1, P, H)
        mask = torch.ones(1, prompt.shape[0], dtype=torch.long, device=embeds.device)
        _, cache = self.decoder.run_embeds(embeds, mask)
        return PreparedPrompt(prompt, cache)

    def _cache(self, prompt: PreparedPrompt):
        return prompt.cache if prompt.cache is not None else self.prepare(prompt.weight).cache

    # -- training loss --------------------------------------------------------------------

    def lm_loss(self, prompt: PreparedPrompt, batch: Batch) -> torch.Tensor:
        cache = expand_cache(self._cache(prompt), batch.size, self.config)
        mask = extend_mask(batch.attention_mask, prompt.length)
        hidden, _ = self.decoder.run(batch.input_ids, mask, cache)  # (B, T, H)
        # hidden at t predicts token t+1: pick only the positions before a target token.
        targets = batch.labels[:, 1:]
        where = targets != IGNORE
        logits = self.decoder.logits(hidden[:, :-1][where])  # (N, V)
        return F.cross_entropy(logits, targets[where])

    # -- rank classification --------------------------------------------------------------

    def candidate_logprobs(self, prompt: PreparedPrompt, inputs: Inputs, candidates: Candidates) -> torch.Tensor:
        return self._candidates(*self._shared_states(prompt, len(inputs)), inputs, candidates)

    def candidate_logprobs_rows(
        self, prompts: Sequence[PreparedPrompt], inputs: Inputs, candidates: Candidates
    ) -> torch.Tensor:
        return self._candidates(*self._row_states(prompts), inputs, candidates)

    def _candidates(self, cache, prefix: torch.Tensor, plens: torch.Tensor, inputs, candidates) -> torch.Tensor:
        """Candidate log-likelihoods after a per-row prompt cache: (B, K).

        Args:
            cache: B rows of prompt key/values over C cache positions.
            prefix: (B, C) 1 where row b's prompt sits in the cache, 0 over padding.
            plens: (B,) prompt length of each row: where its input positions start.
        """
        device = self.lm.device
        ids, mask = pad_right(inputs, self.lm.tokenizer.pad_token_id)
        ids, mask = ids.to(device), mask.to(device)
        full = torch.cat([prefix, mask], dim=1)  # (B, C+T)
        positions = plens.unsqueeze(1) + torch.arange(ids.shape[1], device=device)
        hidden, grown = self.decoder.run(ids, full, cache, positions)  # (B, T, H)
        lengths = mask.sum(1)  # (B,)
        last = hidden[torch.arange(len(inputs), device=device), lengths - 1]  # (B, H)
        first = F.log_softmax(self.decoder.logits(last), dim=-1)  # (B, V)
        rows, ks = flat_index(candidates, device)
        flat = [c for cands in candidates for c in cands]
        totals = first[rows, torch.tensor([c[0] for c in flat], device=device)]  # (N,)
        # Continuations of multi-token candidates, all in one pass from the grown cache.
        multi = [n for n, c in enumerate(flat) if len(c) > 1]
        if multi:
            conts = [flat[n] for n in multi]
            feed, feed_mask = pad_right([c[:-1] for c in conts], self.lm.tokenizer.pad_token_id)
            feed, feed_mask = feed.to(device), feed_mask.to(device)
            src = rows[multi]
            full_mask = torch.cat([full[src], feed_mask], dim=1)
            positions = (plens[src] + lengths[src]).unsqueeze(1) + torch.arange(feed.shape[1], device=device)
            rows_cache = select_cache(grown, src, self.config)
            hidden, _ = self.decoder.run(feed, full_mask, rows_cache, positions)  # (M, L-1, H)
            # hidden[m, j] predicts token j+1 of continuation m: score every such position at once.
            targets, valid = pad_right([c[1:] for c in conts], 0)
            targets, valid = targets.to(device), valid.to(device).bool()
            lp = F.log_softmax(self.decoder.logits(hidden[valid]), dim=-1)  # (tokens, V)
            token_lp = lp.gather(1, targets[valid].unsqueeze(1)).squeeze(1)
            owner = torch.arange(len(conts), device=device).unsqueeze(1).expand_as(valid)[valid]
            extra = torch.zeros(len(conts), device=device, dtype=token_lp.dtype).index_add(0, owner, token_lp)
            totals = totals.index_add(0, torch.tensor(multi, device=device), extra)
        return grid(totals, rows, ks, len(inputs))

    # -- generation -----------------------------------------------------------------------

    def generate(self, prompt: PreparedPrompt, inputs: Inputs, max_new_tokens: int) -> list[list[int]]:
        return self._greedy(*self._shared_states(prompt, len(inputs)), inputs, max_new_tokens)

    def generate_rows(self, prompts: Sequence[PreparedPrompt], inputs: Inputs, max_new_tokens: int) -> list[list[int]]:
        return self._greedy(*self._row_states(prompts), inputs, max_new_tokens)

    def _greedy(self, cache, prefix, plens, inputs, max_new_tokens: int) -> list[list[int]]:
        """Greedy decoding after a per-row prompt cache (see `_candidates` for the arguments)."""
        device = self.lm.device
        ids, mask = pad_right(inputs, self.lm.tokenizer.pad_token_id)
        ids, mask = ids.to(device), mask.to(device)
        full_mask = torch.cat([prefix, mask], dim=1)
        positions = plens.unsqueeze(1) + torch.arange(ids.shape[1], device=device)
        hidden, cache = self.decoder.run(ids, full_mask, cache, positions)  # hidden covers the input only
        last = hidden[torch.arange(ids.shape[0], device=device), mask.sum(1) - 1]
        return self.decoder.greedy(last, cache, full_mask, (plens + mask.sum(1)).unsqueeze(1), max_new_tokens)

    # -- prompt caches per row ------------------------------------------------------------

    def _shared_states(self, prompt: PreparedPrompt, n: int):
        """One prompt's batch-1 cache viewed as `n` rows, with its (n, P) prefix mask and (n,) lengths."""
        device = self.lm.device
        prefix = torch.ones(n, prompt.length, dtype=torch.long, device=device)
        return expand_cache(self._cache(prompt), n, self.config), prefix, torch.full((n,), prompt.length, device=device)

    def _row_states(self, prompts: Sequence[PreparedPrompt]):
        """Cache for a batch whose row b carries `prompts[b]` (P_b, H).

        Each distinct prompt's cache (batch 1; rows share a prompt by passing the same
        PreparedPrompt) is zero-padded after the prompt to the longest length; the rows select
        theirs. The padding is masked out, and the caller starts row b's positions at P_b, so
        each row sees exactly its own prompt. Returns (cache with B rows over max P_b positions,
        (B, max P_b) prefix mask, (B,) prompt lengths).
        """
        device = self.lm.device
        slot: dict[int, int] = {}
        distinct: list[PreparedPrompt] = []
        for prompt in prompts:
            if id(prompt) not in slot:
                slot[id(prompt)] = len(distinct)
                distinct.append(prompt)
        lengths = torch.tensor([p.length for p in distinct], device=device)  # (U,)
        longest = int(lengths.max())
        padded = [pad_cache(self._cache(p), longest, self.config) for p in distinct]
        rows = torch.tensor([slot[id(p)] for p in prompts], device=device)  # (B,)
        prefix = (torch.arange(longest, device=device) < lengths.unsqueeze(1)).long()  # (U, C)
        return select_cache(cat_caches(padded, self.config), rows, self.config), prefix[rows], lengths[rows]
