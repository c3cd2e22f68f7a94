"""Task similarity from prompts (SPoT §4.1).

A task is embedded as a prompt tuned on it for a few steps (the `embedding/` folder a run
writes at --embed-step). Two measures compare embeddings e1 (P1, H) and e2 (P2, H):

  avg_cosine:        cosine of the average prompt tokens, cos(mean_i e1_i, mean_j e2_j)
  per_token_cosine:  the average cosine over every token pair, mean_ij cos(e1_i, e2_j)

Every embedding should start from the same initialisation (same --init and seed) so the
measures see what the tasks did to the prompt, not where it started.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F

from softprompt.errors import ConfigError


def avg_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of the average tokens of `a` (P1, H) and `b` (P2, H)."""
    _check(a, b)
    return F.cosine_similarity(a.float().mean(0), b.float().mean(0), dim=0).item()


def per_token_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean cosine similarity over all P1 x P2 token pairs of `a` (P1, H) and `b` (P2, H)."""
    _check(a, b)
    cos = F.normalize(a.float(), dim=1) @ F.normalize(b.float(), dim=1).T  # (P1, P2)
    return cos.mean().item()


MEASURES: dict[str, Callable[[torch.Tensor, torch.Tensor], float]] = {
    "avg_cosine": avg_cosine,
    "per_token_cosine": per_token_cosine,
}


def measure(name: str) -> Callable[[torch.Tensor, torch.Tensor], float]:
    if name not in MEASURES:
        raise ConfigError(f"--measure {name!r}: expected one of {', '.join(MEASURES)}")
    return MEASURES[name]


def rank(
    target: torch.Tensor, sources: Iterable[tuple[str, torch.Tensor]], by: str = "avg_cosine"
) -> list[tuple[str, dict[str, float]]]:
    """Sources most similar to `target` first: (name, {measure: score}) sorted by measure `by`."""
    measure(by)
    scored = [(name, {m: f(target, emb) for m, f in MEASURES.items()}) for name, emb in sources]
    return sorted(scored, key=lambda item: -item[1][by])


def _check(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        shapes = f"{tuple(a.shape)} and {tuple(b.shape)}"
        raise ConfigError(f"task embeddings must be (length, hidden) of one model, got {shapes}")
