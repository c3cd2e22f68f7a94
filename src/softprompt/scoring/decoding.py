"""A decoder-only model run as body and head apart, and greedy decoding from a key/value cache.

The fast backend needs hidden states without the full-vocabulary projection at every position
(the head runs only where a loss, a score or a next token needs it); both decoder-only backends
decode greedily with the same loop, so they produce the same tokens.
"""

from __future__ import annotations

import inspect

import torch

from softprompt.models.loading import LoadedModel


class DecoderBody:
    """The body (transformer stack) and output head of a decoder-only `lm`, called apart."""

    def __init__(self, lm: LoadedModel) -> None:
        self.lm = lm
        model = lm.model
        self.body = getattr(model, model.base_model_prefix)
        self.head = model.get_output_embeddings()
        self.softcap = getattr(model.config, "final_logit_softcapping", None)
        # transformers 5.24 renamed the forward's `past_key_values` argument (and output field)
        # to `cache` and warns on the old name; earlier releases know only `past_key_values`.
        # Read the name from the body's signature, once.
        params = inspect.signature(self.body.forward).parameters
        self.cache_arg = "cache" if "cache" in params else "past_key_values"

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(N, H) hidden states -> (N, V) fp32 logits, as the model's own head computes them."""
        logits = self.head(hidden).float()
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def run_embeds(self, embeds: torch.Tensor, mask: torch.Tensor, cache=None, position_ids=None):
        """Run the body over `embeds` (B, T, H) after `cache` (None: nothing before them):
        (B, T, H) hidden states and the grown cache. `mask` (B, cached+T) covers cache and
        new positions; `position_ids` (B, T) default to counting on from the cache."""
        out = self.body(
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=position_ids,
            use_cache=True,
            **{self.cache_arg: cache},
        )
        return out.last_hidden_state, getattr(out, self.cache_arg)

    def run(self, ids: torch.Tensor, mask: torch.Tensor, cache, position_ids=None):
        """`run_embeds` over token ids (B, T)."""
        return self.run_embeds(self.lm.embed(ids), mask, cache, position_ids)

    def greedy(self, last: torch.Tensor, cache, full_mask: torch.Tensor, position: torch.Tensor, max_new_tokens: int):
        """Greedy continuations (token ids, EOS excluded) from the last input position.

        Args:
            last: (B, H) hidden state at each row's last input token.
            cache: Key/value states of everything each row has seen (B rows).
            full_mask: (B, C) mask over the cache's positions.
            position: (B, 1) the next position of each row.
            max_new_tokens: Most tokens per row.
        """
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
            hidden, cache = self.run(token.unsqueeze(1), full_mask, cache, position)
            token = self.logits(hidden[:, -1]).argmax(-1)
            position = position + 1
        return [until_eos(p, eos) for p in produced]


def until_eos(ids: list[int], eos: int | None) -> list[int]:
    """`ids` up to (not including) the first EOS."""
    return ids[: ids.index(eos)] if eos in ids else ids
