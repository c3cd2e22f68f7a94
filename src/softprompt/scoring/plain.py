"""The plain decoder-only backend: prepend the prompt (prepend.py) and call the model as
Hugging Face does, with full-vocabulary logits at every position.

The reference the fast backend is checked against, and the path `PromptedLM(lm, fast=False)`
takes. Mixed-task rows are grouped by prompt length, one pass per length.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F

from softprompt.batching import Batch, pad_right
from softprompt.models.loading import LoadedModel
from softprompt.prepend import IGNORE, prepend_prompt
from softprompt.scoring.backends import Inputs, StackedPromptBackend
from softprompt.scoring.candidates import Candidates, flat_index, grid
from softprompt.scoring.decoding import DecoderBody
from softprompt.scoring.prepared import PreparedPrompt


class PlainBackend(StackedPromptBackend):
    """Decoder-only scoring with the prompt prepended to every row's embeddings."""

    def __init__(self, lm: LoadedModel) -> None:
        super().__init__(lm)
        self.decoder = DecoderBody(lm)

    def lm_loss(self, prompt: PreparedPrompt, batch: Batch) -> torch.Tensor:
        embeds = self.lm.embed(batch.input_ids)
        embeds, mask, labels = prepend_prompt(prompt.weight, embeds, batch.attention_mask, batch.labels)
        logits = self.model(inputs_embeds=embeds, attention_mask=mask).logits.float()
        return F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE)

    # -- rank classification --------------------------------------------------------------

    def _candidates(self, prompt: torch.Tensor, inputs: Inputs, candidates: Candidates) -> torch.Tensor:
        """Candidate log-likelihoods with one full forward per (input, candidate) row: (B, K).
        `prompt` is (P, H), or (B, P, H) one per input."""
        device = self.lm.device
        rows, ks = flat_index(candidates, device)
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
        return grid(totals, rows, ks, len(inputs))

    # -- generation -----------------------------------------------------------------------

    def _generate(self, prompt: torch.Tensor, inputs: Inputs, max_new_tokens: int) -> list[list[int]]:
        """Greedy continuations; `prompt` is (P, H), or (B, P, H) one per input."""
        device = self.lm.device
        ids, mask = pad_right(inputs, self.lm.tokenizer.pad_token_id)
        ids, mask = ids.to(device), mask.to(device)
        plen = prompt.shape[-2]
        embeds, full_mask, _ = prepend_prompt(prompt, self.lm.embed(ids), mask)
        hidden, cache = self.decoder.run_embeds(embeds, full_mask)  # hidden covers prompt and input
        last = hidden[torch.arange(len(inputs), device=device), plen + mask.sum(1) - 1]
        return self.decoder.greedy(last, cache, full_mask, (plen + mask.sum(1)).unsqueeze(1), max_new_tokens)
