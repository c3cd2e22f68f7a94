"""A frozen model larger than one device: its decoder layers sharded over the workers (FSDP2)."""

from __future__ import annotations

import torch
import torch.distributed as dist

from softprompt.distributed.group import Context, context
from softprompt.errors import SoftPromptError


def shard_model(lm, ctx: Context | None = None):
    """Shard the frozen model's decoder layers over the workers with FSDP2 (`fully_shard`,
    per-parameter sharding, so frozen weights need no flat-parameter tricks); the prompt,
    the embeddings and the output head stay whole on every worker (the embedding matrix is
    looked up directly by `PromptedLM`, outside the root module's forward, so sharding it
    would leave a worker with a zero-size shard). Every forward then all-gathers each layer
    in turn: all workers must run the same forward passes, so `train` gives every worker
    the whole batch (no data split) and evaluates unsplit, and uses the plain path
    (`fast` off): the fast path runs each layer twice per backward (prompt cache, then
    the rows), which FSDP2 does not support (its backward finds the layer resharded).
    Returns `lm`, sharded in place; a no-op in one process."""
    ctx = context() if ctx is None else ctx
    if not ctx.active:
        return lm
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    device = "cuda" if torch.cuda.is_available() and dist.get_backend() == "nccl" else "cpu"
    mesh = init_device_mesh(device, (ctx.world,))
    layers = _decoder_layers(lm.model)
    for layer in layers:
        fully_shard(layer, mesh=mesh)
    return lm


def _decoder_layers(model) -> list:
    base = getattr(model, model.base_model_prefix, model)
    for name in ("layers", "h", "block"):
        found = getattr(base, name, None) or getattr(getattr(base, "decoder", None), name, None)
        if found is not None:
            return list(found)
    raise SoftPromptError(f"{type(model).__name__}: no decoder layers found to shard")


def is_sharded(model) -> bool:
    """Whether some of `model`'s parameters are FSDP2 shards (DTensors)."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())
