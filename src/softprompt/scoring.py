"""Forward passes of a prompted frozen model: training loss, label scores, generation.

Two paths compute the same numbers:
  * plain: prepend the prompt (combine.py) and call the model as Hugging Face does,
    with full-vocabulary logits at every position;
  * fast (decoder-only): the prompt's key/value states are computed once (batch 1) and
    shared by every row, hidden states come from the model body, and the output
    projection runs only where a loss or a score needs it. Ranking several labels runs
    the shared input once and scores each label's continuation from its cache.
Tests check that both paths agree.

Candidate scores are differentiable (`candidate_logprobs`): evaluation ranks with them
under no_grad (`score`), and the rank-classification training loss (`rank_loss`) is a
cross-entropy over the same scores, so training optimises what evaluation decides by.

Mixed-task batches (serving) give every row its own prompt: `score_rows` and
`generate_rows`. On the fast path the rows' prompt caches are stacked, padded after each
prompt to the longest and masked there, and each row's input takes positions right after
its own prompt, so one forward pass gives every row exactly what `score`/`generate` give it
alone. Elsewhere (T5, plain path) rows are grouped by prompt length, one pass per length.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from softprompt.batching import Batch, pad_right
from softprompt.combine import IGNORE, extend_mask, prepend_prompt
from softprompt.models.loading import LoadedModel


class PromptedLM:
    """A frozen model plus the computations a soft prompt needs.

    Args:
        lm: The loaded, frozen model.
        fast: Use the fast path where the architecture allows (decoder-only).
    """

    def __init__(self, lm: LoadedModel, fast: bool = True) -> None:
        self.lm = lm
        self.model = lm.model
        self.fast = fast and not lm.is_encoder_decoder
        self.body = None if lm.is_encoder_decoder else getattr(self.model, self.model.base_model_prefix)
        self.head = self.model.get_output_embeddings()
        self.softcap = getattr(self.model.config, "final_logit_softcapping", None)

    # -- building blocks -----------------------------------------------------------

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(N, H) hidden states -> (N, V) fp32 logits, as the model's own head computes them."""
        logits = self.head(hidden).float()
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def prompt_states(self, prompt: torch.Tensor):
        """Key/value cache of the prompt alone, batch 1: (P, H) -> Cache.

        Valid for every row because rows are right-padded and the prompt comes first.
        """
        embeds = prompt.to(self.lm.dtype).unsqueeze(0)  # (1, P, H)
        mask = torch.ones(1, prompt.shape[0], dtype=torch.long, device=embeds.device)
        out = self.body(inputs_embeds=embeds, attention_mask=mask, use_cache=True)
        return out.past_key_values

    def _body(self, ids: torch.Tensor, mask: torch.Tensor, cache, position_ids=None):
        """Run the model body over `ids` (B, T) after `cache`: (B, T, H) hidden states and
        the grown cache. `mask` (B, cached+T) covers cache and new tokens."""
        out = self.body(
            inputs_embeds=self.lm.embed(ids),
            attention_mask=mask,
            past_key_values=cache,
            position_ids=position_ids,
            use_cache=True,
        )
        return out.last_hidden_state, out.past_key_values

    # -- training loss --------------------------------------------------------------

    def loss(self, prompt: torch.Tensor, batch: Batch, objective: str = "lm", length_normalize: bool = False) -> torch.Tensor:
        """Training loss of `batch` given `prompt` (P, H).

        objective "lm": mean cross-entropy over the target tokens (the paper's text-to-text
        loss). "rank": rows with candidates (`batch.gold` >= 0) take the cross-entropy over
        their candidates' scores (`rank_loss`), the other rows (generation) the "lm" loss,
        weighted by row counts. "rank+lm": the "rank" loss plus the "lm" loss of every row.
        On ranked rows both come from one scoring pass: the gold candidate is the target.
        """
        if objective == "lm" or batch.gold is None:
            return self.lm_loss(prompt, batch)
        ranked = (batch.gold >= 0).nonzero().flatten().tolist()
        if not ranked:
            return self.lm_loss(prompt, batch)
        rank, gold_lp, gold_tokens = self._rank_terms(
            prompt, [batch.inputs[i] for i in ranked], [batch.choices[i] for i in ranked], batch.gold[ranked], length_normalize
        )
        rest = sorted(set(range(batch.size)) - set(ranked))
        other = self.lm_loss(prompt, batch.select(rest)) if rest else rank.new_zeros(())
        if objective == "rank":
            return (len(ranked) * rank + len(rest) * other) / batch.size
        # "lm" over all rows = token-weighted mean of the ranked rows' gold log-likelihoods and the rest's.
        rest_tokens = int((batch.labels[rest] != IGNORE).sum()) if rest else 0
        lm = (-gold_lp.sum() + other * rest_tokens) / (gold_tokens.sum() + rest_tokens)
        return rank * len(ranked) / batch.size + lm

    def rank_loss(
        self,
        prompt: torch.Tensor,
        inputs: Sequence[Sequence[int]],
        candidates: Sequence[Sequence[Sequence[int]]],
        gold: torch.Tensor,
        length_normalize: bool = False,
    ) -> torch.Tensor:
        """Cross-entropy of the gold candidate `gold[b]` among input b's candidates, each
        scored by its log-likelihood as rank classification scores it."""
        return self._rank_terms(prompt, inputs, candidates, gold, length_normalize)[0]

    def _rank_terms(self, prompt, inputs, candidates, gold: torch.Tensor, length_normalize: bool):
        """`rank_loss`, plus each input's gold candidate log-likelihood and token count
        (its "lm" terms), from one scoring pass."""
        scores = self.candidate_logprobs(prompt, inputs, candidates)  # (B, K)
        lengths = _candidate_lengths(candidates, scores.device)
        gold = gold.to(scores.device)
        rank = F.cross_entropy(scores / lengths if length_normalize else scores, gold)
        picked = torch.arange(len(inputs), device=scores.device)
        return rank, scores[picked, gold], lengths[picked, gold]

    def lm_loss(self, prompt: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Mean cross-entropy over target tokens of `batch` given `prompt` (P, H)."""
        if not self.fast:
            return self._plain_loss(prompt, batch)
        cache = expand_cache(self.prompt_states(prompt), batch.size)
        mask = extend_mask(batch.attention_mask, prompt.shape[0])
        hidden, _ = self._body(batch.input_ids, mask, cache)  # (B, T, H)
        # hidden at t predicts token t+1: pick only the positions before a target token.
        targets = batch.labels[:, 1:]
        where = targets != IGNORE
        logits = self.logits(hidden[:, :-1][where])  # (N, V)
        return F.cross_entropy(logits, targets[where])

    def _plain_loss(self, prompt: torch.Tensor, batch: Batch) -> torch.Tensor:
        embeds = self.lm.embed(batch.input_ids)
        if self.lm.is_encoder_decoder:
            embeds, mask, _ = prepend_prompt(prompt, embeds, batch.attention_mask)
            logits = self.model(inputs_embeds=embeds, attention_mask=mask, labels=batch.labels).logits
            return F.cross_entropy(logits.float().flatten(0, 1), batch.labels.flatten(), ignore_index=IGNORE)
        embeds, mask, labels = prepend_prompt(prompt, embeds, batch.attention_mask, batch.labels)
        logits = self.model(inputs_embeds=embeds, attention_mask=mask).logits.float()
        return F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE)

    # -- rank classification ----------------------------------------------------------

    @torch.no_grad()
    def score(
        self,
        prompt: torch.Tensor,
        inputs: Sequence[Sequence[int]],
        candidates: Sequence[Sequence[Sequence[int]]],
        prompt_cache=None,
    ) -> list[list[tuple[float, int]]]:
        """Log-likelihood of every candidate continuation of every input.

        Args:
            prompt: (P, H) soft prompt.
            inputs: B token-id lists.
            candidates: For each input, K_b candidate token-id lists.
            prompt_cache: `prompt_states(prompt)`, to reuse across batches.

        Returns:
            For each input, a (sum log-prob, token count) pair per candidate.
        """
        return _pairs(self.candidate_logprobs(prompt, inputs, candidates, prompt_cache), candidates)

    def candidate_logprobs(
        self,
        prompt: torch.Tensor,
        inputs: Sequence[Sequence[int]],
        candidates: Sequence[Sequence[Sequence[int]]],
        prompt_cache=None,
    ) -> torch.Tensor:
        """(B, K) sum log-probabilities of each input's candidates, -inf past its K_b;
        differentiable in `prompt` (pass no `prompt_cache` when training)."""
        if self.lm.is_encoder_decoder:
            return self._candidates_seq2seq(prompt, inputs, candidates)
        if not self.fast:
            return self._candidates_plain(prompt, inputs, candidates)
        cache = prompt_cache if prompt_cache is not None else self.prompt_states(prompt)
        return self._candidates_fast(*self._shared_states(cache, prompt.shape[0], len(inputs)), inputs, candidates)

    @torch.no_grad()
    def score_rows(
        self,
        prompts: Sequence[torch.Tensor],
        inputs: Sequence[Sequence[int]],
        candidates: Sequence[Sequence[Sequence[int]]],
        prompt_caches: Sequence | None = None,
    ) -> list[list[tuple[float, int]]]:
        """`score` for a batch whose row b carries its own prompt `prompts[b]` (P_b, H).

        Rows may share a prompt (pass the same tensor) and prompts may differ in length.
        `prompt_caches[b]` is `prompt_states(prompts[b])` or None (computed here).
        """
        if not self.fast:
            return _pairs(_by_prompt_length(prompts, inputs, candidates, self._candidates_grouped), candidates)
        return _pairs(self._candidates_fast(*self.row_states(prompts, prompt_caches), inputs, candidates), candidates)

    def _candidates_grouped(self, prompt: torch.Tensor, inputs, candidates):
        """Rows with one prompt each, all of one length: prompt (B, P, H)."""
        if self.lm.is_encoder_decoder:
            return self._candidates_seq2seq(prompt, inputs, candidates)
        return self._candidates_plain(prompt, inputs, candidates)

    def _candidates_fast(self, cache, prefix: torch.Tensor, plens: torch.Tensor, inputs, candidates) -> torch.Tensor:
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
        hidden, grown = self._body(ids, full, cache, positions)  # (B, T, H)
        lengths = mask.sum(1)  # (B,)
        last = hidden[torch.arange(len(inputs), device=device), lengths - 1]  # (B, H)
        first = F.log_softmax(self.logits(last), dim=-1)  # (B, V)
        rows, ks = _flat_index(candidates, device)
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
            hidden, _ = self._body(feed, full_mask, select_cache(grown, src), positions)  # (M, L-1, H)
            # hidden[m, j] predicts token j+1 of continuation m: score every such position at once.
            targets, valid = pad_right([c[1:] for c in conts], 0)
            targets, valid = targets.to(device), valid.to(device).bool()
            lp = F.log_softmax(self.logits(hidden[valid]), dim=-1)  # (tokens, V)
            token_lp = lp.gather(1, targets[valid].unsqueeze(1)).squeeze(1)
            owner = torch.arange(len(conts), device=device).unsqueeze(1).expand_as(valid)[valid]
            extra = torch.zeros(len(conts), device=device, dtype=token_lp.dtype).index_add(0, owner, token_lp)
            totals = totals.index_add(0, torch.tensor(multi, device=device), extra)
        return _grid(totals, rows, ks, len(inputs))

    # -- per-row prompt caches ------------------------------------------------------------

    def _shared_states(self, cache, plen: int, batch: int):
        """One prompt's batch-1 cache viewed as `batch` rows, with its prefix mask and lengths."""
        device = self.lm.device
        prefix = torch.ones(batch, plen, dtype=torch.long, device=device)
        return expand_cache(cache, batch), prefix, torch.full((batch,), plen, device=device)

    def row_states(self, prompts: Sequence[torch.Tensor], prompt_caches: Sequence | None = None):
        """Cache for a batch whose row b carries `prompts[b]` (P_b, H).

        Each distinct prompt's cache (computed once, batch 1) is zero-padded after the
        prompt to the longest length; the rows select theirs. The padding is masked out,
        and the caller starts row b's positions at P_b, so each row sees exactly its own
        prompt. Returns (cache with B rows over max P_b positions, (B, max P_b) prefix mask,
        (B,) prompt lengths).
        """
        device = self.lm.device
        slot: dict[int, int] = {}
        distinct: list[tuple[torch.Tensor, object]] = []
        for b, prompt in enumerate(prompts):
            if id(prompt) not in slot:
                slot[id(prompt)] = len(distinct)
                given = prompt_caches[b] if prompt_caches is not None else None
                distinct.append((prompt, given if given is not None else self.prompt_states(prompt)))
        lengths = torch.tensor([p.shape[0] for p, _ in distinct], device=device)  # (U,)
        longest = int(lengths.max())
        padded = [_map_cache(c, lambda t: F.pad(t, (0, 0, 0, longest - t.shape[-2]))) for _, c in distinct]
        rows = torch.tensor([slot[id(p)] for p in prompts], device=device)  # (B,)
        prefix = (torch.arange(longest, device=device) < lengths.unsqueeze(1)).long()  # (U, C)
        return select_cache(cat_caches(padded), rows), prefix[rows], lengths[rows]

    def _candidates_plain(self, prompt, inputs, candidates) -> torch.Tensor:
        """Candidate log-likelihoods with one full forward per (input, candidate) row: (B, K)."""
        device = self.lm.device
        rows, ks = _flat_index(candidates, device)
        flat = [(list(inputs[b]), list(c)) for b, cands in enumerate(candidates) for c in cands]
        ids, mask = pad_right([i + c for i, c in flat], self.lm.tokenizer.pad_token_id)
        plen = prompt.shape[-2]
        if prompt.ndim == 3:  # one prompt per input (B, P, H) -> one per (input, candidate) row
            prompt = prompt[rows.to(prompt.device)]
        embeds, mask, _ = prepend_prompt(prompt, self.lm.embed(ids.to(device)), mask.to(device))
        logp = F.log_softmax(self.model(inputs_embeds=embeds, attention_mask=mask).logits.float(), dim=-1)
        # Candidate token j of row n is predicted at position plen + len(input) - 1 + j.
        row_of, pos, tok = [], [], []
        for n, (inp, cand) in enumerate(flat):
            row_of += [n] * len(cand)
            pos += range(plen + len(inp) - 1, plen + len(inp) - 1 + len(cand))
            tok += cand
        row_of = torch.tensor(row_of, device=device)
        token_lp = logp[row_of, torch.tensor(pos, device=device), torch.tensor(tok, device=device)]
        totals = torch.zeros(len(flat), device=device, dtype=logp.dtype).index_add(0, row_of, token_lp)
        return _grid(totals, rows, ks, len(inputs))

    def _candidates_seq2seq(self, prompt, inputs, candidates) -> torch.Tensor:
        """Encoder once per input, decoder once per (input, candidate) row: (B, K)."""
        device = self.lm.device
        ids, mask = pad_right(inputs, self.lm.tokenizer.pad_token_id)
        embeds, mask, _ = prepend_prompt(prompt, self.lm.embed(ids.to(device)), mask.to(device))
        encoded = self.model.get_encoder()(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        rows, ks = _flat_index(candidates, device)
        labels, _ = pad_right([c for cands in candidates for c in cands], IGNORE)
        labels = labels.to(device)
        out = self.model(encoder_outputs=(encoded[rows],), attention_mask=mask[rows], labels=labels)
        logp = F.log_softmax(out.logits.float(), dim=-1)
        token_lp = logp.gather(2, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * (labels != IGNORE)
        return _grid(token_lp.sum(1), rows, ks, len(inputs))

    # -- generation ---------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor, inputs: Sequence[Sequence[int]], max_new_tokens: int, prompt_cache=None) -> list[list[int]]:
        """Greedy continuations (token ids, EOS excluded) of each input.

        `prompt` is (P, H), or (B, P, H) one per row off the fast path (see `generate_rows`).
        """
        device = self.lm.device
        eos = self.lm.tokenizer.eos_token_id
        ids, mask = pad_right(inputs, self.lm.tokenizer.pad_token_id)
        ids, mask = ids.to(device), mask.to(device)
        if self.lm.is_encoder_decoder:
            embeds, mask, _ = prepend_prompt(prompt, self.lm.embed(ids), mask)
            out = self.model.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False)
            return [_until_eos(row.tolist()[1:], eos) for row in out]
        if self.fast:
            cache = prompt_cache if prompt_cache is not None else self.prompt_states(prompt)
            return self._greedy_fast(*self._shared_states(cache, prompt.shape[0], len(inputs)), ids, mask, max_new_tokens)
        plen = prompt.shape[-2]
        embeds, full_mask, _ = prepend_prompt(prompt, self.lm.embed(ids), mask)
        out = self.body(inputs_embeds=embeds, attention_mask=full_mask, use_cache=True)
        rows = torch.arange(len(inputs), device=device)
        last = out.last_hidden_state[rows, plen + mask.sum(1) - 1]  # hidden covers prompt and input
        return self._greedy(last, out.past_key_values, full_mask, (plen + mask.sum(1)).unsqueeze(1), max_new_tokens)

    @torch.no_grad()
    def generate_rows(
        self,
        prompts: Sequence[torch.Tensor],
        inputs: Sequence[Sequence[int]],
        max_new_tokens: int,
        prompt_caches: Sequence | None = None,
    ) -> list[list[int]]:
        """`generate` for a batch whose row b carries its own prompt `prompts[b]` (P_b, H)."""
        if not self.fast:
            return _by_prompt_length(prompts, inputs, None, lambda p, i, _: self.generate(p, i, max_new_tokens))
        device = self.lm.device
        ids, mask = pad_right(inputs, self.lm.tokenizer.pad_token_id)
        return self._greedy_fast(*self.row_states(prompts, prompt_caches), ids.to(device), mask.to(device), max_new_tokens)

    def _greedy_fast(self, cache, prefix, plens, ids, mask, max_new_tokens: int) -> list[list[int]]:
        """Greedy decoding after a per-row prompt cache (see `_candidates_fast` for the arguments)."""
        full_mask = torch.cat([prefix, mask], dim=1)
        positions = plens.unsqueeze(1) + torch.arange(ids.shape[1], device=ids.device)
        hidden, cache = self._body(ids, full_mask, cache, positions)  # hidden covers the input only
        last = hidden[torch.arange(ids.shape[0], device=ids.device), mask.sum(1) - 1]
        return self._greedy(last, cache, full_mask, (plens + mask.sum(1)).unsqueeze(1), max_new_tokens)

    def _greedy(self, last: torch.Tensor, cache, full_mask: torch.Tensor, position: torch.Tensor, max_new_tokens: int):
        """Decode from the last input position: `last` (B, H) hidden states, `position`
        (B, 1) the next position of each row."""
        eos = self.lm.tokenizer.eos_token_id
        token = self.logits(last).argmax(-1)  # (B,)
        produced: list[list[int]] = [[] for _ in range(last.shape[0])]
        done = torch.zeros(last.shape[0], dtype=torch.bool, device=last.device)
        for _ in range(max_new_tokens):
            for r in (~done).nonzero().flatten().tolist():
                produced[r].append(token[r].item())
            done |= token == eos
            if done.all():
                break
            full_mask = torch.cat([full_mask, torch.ones_like(full_mask[:, :1])], dim=1)
            hidden, cache = self._body(token.unsqueeze(1), full_mask, cache, position)
            token = self.logits(hidden[:, -1]).argmax(-1)
            position = position + 1
        return [_until_eos(p, eos) for p in produced]


def _by_prompt_length(prompts, inputs, candidates, run):
    """Run `run(prompt (G, P, H), inputs, candidates)` once per group of rows whose prompts
    have one length, and put the results back in row order."""
    groups: dict[int, list[int]] = {}
    for b, prompt in enumerate(prompts):
        groups.setdefault(prompt.shape[0], []).append(b)
    out: list = [None] * len(prompts)
    for rows in groups.values():
        stacked = torch.stack([prompts[b] for b in rows])
        cands = [candidates[b] for b in rows] if candidates is not None else None
        for b, result in zip(rows, run(stacked, [inputs[b] for b in rows], cands)):
            out[b] = result
    return out


def _flat_index(candidates, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(input row, candidate index) of every candidate, flattened row by row."""
    pairs = [(b, k) for b, cands in enumerate(candidates) for k in range(len(cands))]
    return torch.tensor([b for b, _ in pairs], device=device), torch.tensor([k for _, k in pairs], device=device)


def _grid(totals: torch.Tensor, rows: torch.Tensor, ks: torch.Tensor, batch: int) -> torch.Tensor:
    """Flat per-candidate values -> (B, K) with -inf where an input has fewer candidates."""
    grid = torch.full((batch, int(ks.max()) + 1), -math.inf, device=totals.device, dtype=totals.dtype)
    return grid.index_put((rows, ks), totals)


def _candidate_lengths(candidates, device) -> torch.Tensor:
    """(B, K) token count of each candidate (1 past an input's K_b, where scores are -inf)."""
    width = max(len(cands) for cands in candidates)
    return torch.tensor([[len(c) for c in cands] + [1] * (width - len(cands)) for cands in candidates], device=device)


def _pairs(grid, candidates) -> list[list[tuple[float, int]]]:
    """(B, K) scores (or B rows of K_b) -> per input, (sum log-prob, token count) per candidate."""
    values = grid.tolist() if torch.is_tensor(grid) else [row.tolist() for row in grid]  # one transfer
    return [[(v, len(c)) for v, c in zip(row, cands)] for row, cands in zip(values, candidates)]


def _until_eos(ids: list[int], eos: int | None) -> list[int]:
    return ids[: ids.index(eos)] if eos in ids else ids


def expand_cache(cache, batch: int):
    """A new cache whose every layer views the batch-1 `cache` as `batch` rows (no copy)."""
    return _map_cache(cache, lambda t: t.expand(batch, -1, -1, -1))


def cat_caches(caches: Sequence):
    """One cache holding the rows of `caches` in order (equal lengths)."""
    new = copy.copy(caches[0])
    new.layers = []
    for layers in zip(*(c.layers for c in caches)):
        clone = copy.copy(layers[0])
        clone.keys = torch.cat([layer.keys for layer in layers])
        clone.values = torch.cat([layer.values for layer in layers])
        new.layers.append(clone)
    return new


def select_cache(cache, rows: torch.Tensor):
    """A new cache holding rows `rows` of `cache` (rows may repeat)."""
    return _map_cache(cache, lambda t: t.index_select(0, rows))


def _map_cache(cache, fn):
    new = copy.copy(cache)
    new.layers = []
    for layer in cache.layers:
        clone = copy.copy(layer)
        clone.keys, clone.values = fn(layer.keys), fn(layer.values)
        new.layers.append(clone)
    return new
