"""Where a prompt meets the input: prepend it, extend the mask, pad the labels.

After Lester et al.: concat([prompt, x_embed], axis=1). Two ways in:
  * `prepend_prompt` puts the prompt's embeddings in front of the input's. The plain
    decoder-only path (training loss, candidate scores, generation), every T5 path
    (encoder input) and the PEFT-equivalence check go through it.
  * The fast decoder-only path (scoring/fast.py) never concatenates embeddings: it feeds
    the prompt's key/value cache in front of the input and widens the attention mask with
    `extend_mask` (the loss) or with its own per-row prompt mask (scores, generation of
    mixed-task batches). The prompt sits at the same positions either way, which is why
    both paths give the same numbers.
"""

from __future__ import annotations

import torch

IGNORE = -100  # label value that the loss skips


def prepend_prompt(
    prompt: torch.Tensor,
    embeds: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Prepend a soft prompt to a batch of embedded inputs.

    Args:
        prompt: (P, H) one prompt for the whole batch, or (B, P, H) one per row
            (mixed-task batches). Cast to the dtype of `embeds`.
        embeds: (B, T, H) embedded input tokens.
        attention_mask: (B, T) 1 for real tokens, 0 for padding.
        labels: (B, T) target ids with IGNORE where no loss is taken, or None.

    Returns:
        (B, P+T, H) embeddings, (B, P+T) mask with ones over the prompt, and
        (B, P+T) labels with IGNORE over the prompt (None if labels was None).
    """
    batch = embeds.shape[0]
    if prompt.ndim == 2:
        prompt = prompt.unsqueeze(0).expand(batch, -1, -1)
    length = prompt.shape[1]
    embeds = torch.cat([prompt.to(embeds.dtype), embeds], dim=1)
    attention_mask = extend_mask(attention_mask, length)
    if labels is not None:
        labels = torch.cat([labels.new_full((batch, length), IGNORE), labels], dim=1)
    return embeds, attention_mask, labels


def extend_mask(attention_mask: torch.Tensor, prompt_length: int) -> torch.Tensor:
    """(B, T) mask -> (B, P+T): the prompt positions are always attended to."""
    ones = attention_mask.new_ones(attention_mask.shape[0], prompt_length)
    return torch.cat([ones, attention_mask], dim=1)
