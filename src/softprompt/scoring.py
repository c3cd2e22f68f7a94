"""Forward passes of a prompted frozen model: training loss, label scores, generation.

Two paths compute the same numbers:
  * plain: prepend the prompt (combine.py) and call the model as Hugging Face does,
    with full-vocabulary logits at every position;
  * fast (decoder-only): the prompt's key/value states are computed once (batch 1) and
    shared by every row, hidden states come from the model body, and the output
    projection runs only where a loss or a score needs it. Ranking several labels runs
    the shared input once and scores each label's continuation from its cache.
Tests check that both paths agree.
"""

from __future__ import annotations

import copy
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

    def loss(self, prompt: torch.Tensor, batch: Batch) -> torch.Tensor:
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
        if self.lm.is_encoder_decoder:
            return self._score_seq2seq(prompt, inputs, candidates)
        if not self.fast:
            return self._score_plain(prompt, inputs, candidates)
        device = self.lm.device
        plen = prompt.shape[0]
        cache = prompt_cache if prompt_cache is not None else self.prompt_states(prompt)
        ids, mask = pad_right(inputs, self.lm.tokenizer.pad_token_id)
        ids, mask = ids.to(device), mask.to(device)
        hidden, grown = self._body(ids, extend_mask(mask, plen), expand_cache(cache, len(inputs)))
        lengths = mask.sum(1)  # (B,)
        last = hidden[torch.arange(len(inputs), device=device), lengths - 1]  # (B, H)
        first = F.log_softmax(self.logits(last), dim=-1)  # (B, V)
        scores = [[(first[b, c[0]].item(), len(c)) for c in cands] for b, cands in enumerate(candidates)]
        # Continuations of multi-token candidates, all in one pass from the grown cache.
        rows = [(b, k) for b, cands in enumerate(candidates) for k, c in enumerate(cands) if len(c) > 1]
        if not rows:
            return scores
        conts = [candidates[b][k] for b, k in rows]
        feed, feed_mask = pad_right([c[:-1] for c in conts], self.lm.tokenizer.pad_token_id)
        feed, feed_mask = feed.to(device), feed_mask.to(device)
        src = torch.tensor([b for b, _ in rows], device=device)
        full_mask = torch.cat([extend_mask(mask, plen)[src], feed_mask], dim=1)
        positions = (plen + lengths[src]).unsqueeze(1) + torch.arange(feed.shape[1], device=device)
        hidden, _ = self._body(feed, full_mask, select_cache(grown, src), positions)  # (N, L-1, H)
        for n, (b, k) in enumerate(rows):
            cont = conts[n]
            lp = F.log_softmax(self.logits(hidden[n, : len(cont) - 1]), dim=-1)  # (L-1, V)
            extra = lp.gather(1, torch.tensor(cont[1:], device=device).unsqueeze(1)).sum().item()
            scores[b][k] = (scores[b][k][0] + extra, len(cont))
        return scores

    def _score_plain(self, prompt, inputs, candidates):
        flat = [(b, list(inputs[b]), list(c)) for b, cands in enumerate(candidates) for c in cands]
        ids, mask = pad_right([i + c for _, i, c in flat], self.lm.tokenizer.pad_token_id)
        device = self.lm.device
        embeds, mask, _ = prepend_prompt(prompt, self.lm.embed(ids.to(device)), mask.to(device))
        logp = F.log_softmax(self.model(inputs_embeds=embeds, attention_mask=mask).logits.float(), dim=-1)
        plen = prompt.shape[0]
        scores: list[list[tuple[float, int]]] = [[] for _ in inputs]
        for n, (b, inp, cand) in enumerate(flat):
            pos = torch.arange(len(cand), device=device) + plen + len(inp) - 1
            total = logp[n, pos, torch.tensor(cand, device=device)].sum().item()
            scores[b].append((total, len(cand)))
        return scores

    def _score_seq2seq(self, prompt, inputs, candidates):
        device = self.lm.device
        ids, mask = pad_right(inputs, self.lm.tokenizer.pad_token_id)
        embeds, mask, _ = prepend_prompt(prompt, self.lm.embed(ids.to(device)), mask.to(device))
        encoded = self.model.get_encoder()(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        flat = [(b, c) for b, cands in enumerate(candidates) for c in cands]
        src = torch.tensor([b for b, _ in flat], device=device)
        labels, _ = pad_right([c for _, c in flat], IGNORE)
        labels = labels.to(device)
        out = self.model(encoder_outputs=(encoded[src],), attention_mask=mask[src], labels=labels)
        logp = F.log_softmax(out.logits.float(), dim=-1)
        token_lp = logp.gather(2, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * (labels != IGNORE)
        scores: list[list[tuple[float, int]]] = [[] for _ in inputs]
        for n, (b, c) in enumerate(flat):
            scores[b].append((token_lp[n].sum().item(), len(c)))
        return scores

    # -- generation ---------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor, inputs: Sequence[Sequence[int]], max_new_tokens: int, prompt_cache=None) -> list[list[int]]:
        """Greedy continuations (token ids, EOS excluded) of each input."""
        device = self.lm.device
        eos = self.lm.tokenizer.eos_token_id
        ids, mask = pad_right(inputs, self.lm.tokenizer.pad_token_id)
        ids, mask = ids.to(device), mask.to(device)
        if self.lm.is_encoder_decoder:
            embeds, mask, _ = prepend_prompt(prompt, self.lm.embed(ids), mask)
            out = self.model.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False)
            return [_until_eos(row.tolist()[1:], eos) for row in out]
        plen = prompt.shape[0]
        if self.fast:
            cache = prompt_cache if prompt_cache is not None else self.prompt_states(prompt)
            full_mask = extend_mask(mask, plen)
            hidden, cache = self._body(ids, full_mask, expand_cache(cache, len(inputs)))
            offset = 0  # hidden covers the input only
        else:
            embeds, full_mask, _ = prepend_prompt(prompt, self.lm.embed(ids), mask)
            out = self.body(inputs_embeds=embeds, attention_mask=full_mask, use_cache=True)
            hidden, cache = out.last_hidden_state, out.past_key_values
            offset = plen  # hidden covers prompt and input
        rows = torch.arange(len(inputs), device=device)
        token = self.logits(hidden[rows, offset + mask.sum(1) - 1]).argmax(-1)  # (B,)
        position = (plen + mask.sum(1)).unsqueeze(1)  # (B, 1) next position per row
        produced: list[list[int]] = [[] for _ in inputs]
        done = torch.zeros(len(inputs), dtype=torch.bool, device=device)
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


def _until_eos(ids: list[int], eos: int | None) -> list[int]:
    return ids[: ids.index(eos)] if eos in ids else ids


def expand_cache(cache, batch: int):
    """A new cache whose every layer views the batch-1 `cache` as `batch` rows (no copy)."""
    return _map_cache(cache, lambda t: t.expand(batch, -1, -1, -1))


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
