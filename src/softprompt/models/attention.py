"""Choose the attention kernel by measuring, like the precision (`precision.py`).

transformers runs attention through PyTorch's fused `scaled_dot_product_attention` ("sdpa")
by default, or as two matmuls around a softmax ("eager"). On CUDA the fused kernels win. On
a CPU the answer depends on dtype and shape: for the short rows prompt tuning trains on
(tens of tokens), the fused CPU kernel's bf16 backward was measured at 1.4-1.7x the time of
the plain matmul form on an AVX512-BF16 machine, while in fp32 the two tie. So "auto" times
one forward + backward of both forms at a typical training shape on the device and dtype in
use (a few tens of milliseconds, once per process) and takes eager only where it is clearly
faster. Both compute the same function (the choice changes rounding, not results).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from softprompt.errors import ModelError

CHOICES = ("auto", "sdpa", "eager")
# eager must beat sdpa by this factor before auto picks it (the probe jitters on a shared machine).
MARGIN = 1.15


@dataclass(frozen=True)
class AttentionChoice:
    """What `attention` resolved to, and why (`sdpa_ms`/`eager_ms`: probe times, None if not measured)."""

    requested: str
    implementation: str
    reason: str
    sdpa_ms: float | None = None
    eager_ms: float | None = None


def eager_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """transformers' eager attention: softmax(q kᵀ / √d + mask) v, the softmax in fp32."""
    weights = torch.matmul(q, k.transpose(-1, -2)) * q.shape[-1] ** -0.5 + mask
    return torch.matmul(F.softmax(weights, dim=-1, dtype=torch.float32).to(q.dtype), v)


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


_TIMES: dict[tuple, tuple[float, float]] = {}


def measure(
    device: torch.device,
    dtype: torch.dtype,
    heads: int = 9,
    head_dim: int = 64,
    batch: int = 16,
    queries: int = 64,
    prompt: int = 20,
    rounds: int = 4,
) -> tuple[float, float]:
    """Seconds of one forward + backward (gradient to q, k, v) of each form, best of `rounds`
    interleaved rounds: (sdpa, eager). The shape is a prompt-tuning batch: `batch` rows of
    `queries` tokens attending to `prompt` prompt positions plus themselves, causally."""
    gen = torch.Generator().manual_seed(0)
    keys = prompt + queries

    def tensor(length: int) -> torch.Tensor:
        x = torch.randn(batch, heads, length, head_dim, generator=gen).to(device=device, dtype=dtype)
        return x.requires_grad_(True)

    q, k, v = tensor(queries), tensor(keys), tensor(keys)
    allowed = torch.ones(queries, keys, dtype=torch.bool).tril(prompt)
    mask = torch.zeros(queries, keys, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min).to(device)
    grad = torch.randn(batch, heads, queries, head_dim, generator=gen).to(device=device, dtype=dtype)
    best = {sdpa_attention: float("inf"), eager_attention: float("inf")}
    for round_ in range(rounds + 1):  # round 0 warms up (kernel selection, allocation)
        for form in best:
            t0 = time.perf_counter()
            form(q, k, v, mask).backward(grad)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if round_:
                best[form] = min(best[form], time.perf_counter() - t0)
    return best[sdpa_attention], best[eager_attention]


def decide(sdpa_s: float, eager_s: float, device_type: str, margin: float = MARGIN) -> tuple[str, str]:
    """(implementation, reason) for "auto" from the two measured times."""
    if device_type == "cuda":
        return "sdpa", "fused kernels on CUDA"
    ratio = sdpa_s / eager_s if eager_s > 0 else 0.0
    if ratio >= margin:
        return "eager", f"matmul attention is {ratio:.2f}x faster than sdpa here"
    return "sdpa", f"matmul attention is only {ratio:.2f}x sdpa's speed here (eager needs {margin:.2f}x)"


def choose(
    attention: str, device: torch.device | str, dtype: torch.dtype, heads: int = 9, head_dim: int = 64
) -> AttentionChoice:
    """Resolve `attention` ("auto" | "sdpa" | "eager") for a model with `heads` × `head_dim`
    attention on `device` in `dtype`; "auto" measures (cached per device, dtype, shape, threads)."""
    if attention not in CHOICES:
        raise ModelError(f"attention {attention!r}: expected auto, sdpa or eager")
    if attention != "auto":
        return AttentionChoice(attention, attention, "requested")
    device = torch.device(device)
    if device.type == "cuda":
        return AttentionChoice("auto", "sdpa", "fused kernels on CUDA")
    key = (str(device), dtype, heads, head_dim, torch.get_num_threads())
    if key not in _TIMES:
        _TIMES[key] = measure(device, dtype, heads, head_dim)
    sdpa_s, eager_s = _TIMES[key]
    implementation, reason = decide(sdpa_s, eager_s, device.type)
    return AttentionChoice("auto", implementation, reason, 1000 * sdpa_s, 1000 * eager_s)


def describe(choice: AttentionChoice) -> str:
    head = f"attention {choice.requested} -> {choice.implementation}"
    if choice.sdpa_ms is None:
        return f"{head} ({choice.reason})"
    return f"{head}: fwd+bwd sdpa {choice.sdpa_ms:.1f} ms vs eager {choice.eager_ms:.1f} ms ({choice.reason})"
