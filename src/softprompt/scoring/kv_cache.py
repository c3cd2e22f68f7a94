"""Row and position surgery on a transformers key/value `DynamicCache`, through its public API.

A cache is read by iterating it (one tuple per layer: keys and values of shape
(B, heads, positions, head_dim), then, on transformers 5, the layer's sliding window or None)
and a new one is built from such tuples with `DynamicCache(per_layer_tuples, config=...)`:
given the model's config, the new cache gets the layer kinds (full or sliding attention) the
model gives its own caches. Every function returns a new cache and leaves its argument
untouched, so a prompt's cache can be reused across batches and stays differentiable in the
prompt (the training loss prepares its prompt on every step).

Why not the in-place public methods (`batch_select_indices`, `batch_repeat_interleave`,
`crop`): they change the cache they are called on, and a cache has no public copy that keeps
the autograd graph (`copy.deepcopy` refuses non-leaf tensors), so the prompt's shared cache
would be consumed. Building a new cache from tensors is the public way to get a changed copy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from transformers import DynamicCache


def expand_cache(cache, rows: int, config=None):
    """A new cache holding the batch-1 `cache` as `rows` identical rows."""
    return _map_cache(cache, lambda t: t.expand(rows, -1, -1, -1), config)


def select_cache(cache, rows: torch.Tensor, config=None):
    """A new cache holding rows `rows` (a 1-D index tensor) of `cache`; rows may repeat."""
    return _map_cache(cache, lambda t: t.index_select(0, rows), config)


def pad_cache(cache, length: int, config=None):
    """A new cache zero-padded after its positions to `length` positions."""
    return _map_cache(cache, lambda t: F.pad(t, (0, 0, 0, length - t.shape[-2])), config)


def cat_caches(caches: Sequence, config=None):
    """One cache holding the rows of `caches` in order (all over the same positions)."""
    layers = []
    for per_cache in zip(*(layer_tensors(c) for c in caches)):  # one layer, every cache
        keys = torch.cat([layer[0] for layer in per_cache])
        values = torch.cat([layer[1] for layer in per_cache])
        layers.append((keys, values, *per_cache[0][2:]))
    return DynamicCache(layers, config=config)


def layer_tensors(cache) -> list[tuple]:
    """Per layer: (keys, values[, sliding window]), keys and values (B, heads, positions, head_dim)."""
    return [tuple(layer) for layer in cache]


def _map_cache(cache, fn: Callable[[torch.Tensor], torch.Tensor], config=None):
    """A new cache whose every layer's keys and values are `fn` of the old ones (None: no cache,
    the empty prompt's, stays None)."""
    if cache is None:
        return None
    return DynamicCache([(fn(k), fn(v), *rest) for k, v, *rest in layer_tensors(cache)], config=config)
