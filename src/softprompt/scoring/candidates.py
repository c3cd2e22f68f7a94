"""Bookkeeping of ragged candidate lists: B inputs with K_b candidates each.

Backends score the candidates as one flat list (row by row) and return a (B, K) grid with
-inf where an input has fewer than K candidates; these helpers map between the two.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

Candidates = Sequence[Sequence[Sequence[int]]]  # per input, K_b candidate token-id lists


def flat_index(candidates: Candidates, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(input row, candidate index) of every candidate, flattened row by row: two (N,) tensors."""
    pairs = [(b, k) for b, cands in enumerate(candidates) for k in range(len(cands))]
    return torch.tensor([b for b, _ in pairs], device=device), torch.tensor([k for _, k in pairs], device=device)


def grid(totals: torch.Tensor, rows: torch.Tensor, ks: torch.Tensor, n: int) -> torch.Tensor:
    """Flat (N,) per-candidate values -> (n, K) with -inf where an input has fewer candidates."""
    out = torch.full((n, int(ks.max()) + 1), -math.inf, device=totals.device, dtype=totals.dtype)
    return out.index_put((rows, ks), totals)


def candidate_lengths(candidates: Candidates, device) -> torch.Tensor:
    """(B, K) token count of each candidate (1 past an input's K_b, where scores are -inf)."""
    width = max(len(cands) for cands in candidates)
    return torch.tensor([[len(c) for c in cands] + [1] * (width - len(cands)) for cands in candidates], device=device)


def pairs(scores, candidates: Candidates) -> list[list[tuple[float, int]]]:
    """(B, K) scores (or B rows of K_b) -> per input, (sum log-prob, token count) per candidate."""
    values = scores.tolist() if torch.is_tensor(scores) else [row.tolist() for row in scores]  # one transfer
    return [[(v, len(c)) for v, c in zip(row, cands)] for row, cands in zip(values, candidates)]
