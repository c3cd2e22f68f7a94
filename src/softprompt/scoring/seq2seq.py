"""The encoder-decoder backend (T5): the prompt goes in front of the encoder input (prepend.py).

No fast path: the decoder attends to the prompt through the encoder output, not through a
key/value cache the rows could share. Mixed-task rows are grouped by prompt length, one pass
per length.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F

from softprompt.batching import Batch, pad_right
from softprompt.prepend import IGNORE, prepend_prompt
from softprompt.scoring.backends import Inputs, StackedPromptBackend
from softprompt.scoring.candidates import Candidates, flat_index, grid
from softprompt.scoring.decoding import until_eos
from softprompt.scoring.prepared import PreparedPrompt


class Seq2SeqBackend(StackedPromptBackend):
    """Encoder-decoder scoring: prompt + input into the encoder, targets through the decoder."""

    def lm_loss(self, prompt: PreparedPrompt, batch: Batch) -> torch.Tensor:
        embeds = self.lm.embed(batch.input_ids)
        embeds, mask, _ = prepend_prompt(prompt.weight, embeds, batch.attention_mask)
        logits = self.model(inputs_embeds=embeds, attention_mask=mask, labels=batch.labels).logits
        return F.cross_entropy(logits.float().flatten(0, 1), batch.labels.flatten(), ignore_index=IGNORE)

    # -- rank classification --------------------------------------------------------------

    def _candidates(self, prompt: torch.Tensor, inputs: Inputs, candidates: Candidates) -> torch.Tensor:
        """Encoder once per input, decoder once per (input, candidate) row: (B, K).
        `prompt` is (P, H), or (B, P, H) one per input."""
        device = self.lm.device
        ids, mask = pad_right(inputs, self.lm.tokenizer.pad_token_id)
        embeds, mask, _ = prepend_prompt(prompt, self.lm.embed(ids.to(device)), mask.to(device))
        encoded = self.model.get_encoder()(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        rows, ks = flat_index(candidates, device)
        labels, _ = pad_right([c for cands in candidates for c in cands], IGNORE)
        labels = labels.to(device)
        out = self.model(encoder_outputs=(encoded[rows],), attention_mask=mask[rows], labels=labels)
        logp = F.log_softmax(out.logits.float(), dim=-1)
        token_lp = logp.gather(2, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * (labels != IGNORE)
        return grid(token_lp.sum(1), rows, ks, len(inputs))

    # -- generation -----------------------------------------------------------------------

    def _generate(self, prompt: torch.Tensor, inputs: Inputs, max_new_tokens: int) -> list[list[int]]:
        """Greedy continuations by Hugging Face's `generate`; `prompt` is (P, H) or (B, P, H)."""
        device = self.lm.device
        ids, mask = pad_right(inputs, self.lm.tokenizer.pad_token_id)
        embeds, mask, _ = prepend_prompt(prompt, self.lm.embed(ids.to(device)), mask.to(device))
        out = self.model.generate(
            inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False
        )
        return [until_eos(row.tolist()[1:], self.lm.tokenizer.eos_token_id) for row in out]
