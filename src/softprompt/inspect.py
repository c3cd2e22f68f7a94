"""Interpretability: the nearest vocabulary tokens of each prompt position (Lester et al. §7)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from softprompt.models.loading import LoadedModel


def nearest_tokens(prompt: torch.Tensor, lm: LoadedModel, top_k: int = 5) -> list[list[tuple[str, float]]]:
    """For each of the P prompt vectors, the `top_k` tokens whose input embeddings are
    closest by cosine similarity, as (token text, similarity)."""
    emb = lm.model.get_input_embeddings()
    table = emb.weight.detach().float().cpu() * float(getattr(emb, "embed_scale", 1.0))  # (V, H)
    sims = F.normalize(prompt.float().cpu(), dim=-1) @ F.normalize(table, dim=-1).T  # (P, V)
    values, ids = sims.topk(min(top_k, table.shape[0]), dim=-1)
    tok = lm.tokenizer
    return [
        [
            (tok.convert_tokens_to_string([tok.convert_ids_to_tokens(i)]), v)
            for i, v in zip(row_ids.tolist(), row_vals.tolist())
        ]
        for row_ids, row_vals in zip(ids, values)
    ]
