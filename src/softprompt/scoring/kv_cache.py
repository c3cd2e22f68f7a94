"""Row and position surgery on a transformers key/value `Cache`.

The only module that knows the cache's internal layout: a `Cache` holds `.layers`, each with
`.keys` and `.values` tensors of shape (B, heads, positions, head_dim). Every function
returns a new cache (shallow copies of the cache and its layers with new tensors) and leaves
its argument untouched, so a prompt's cache can be reused across batches.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F


def expand_cache(cache, rows: int):
    """A new cache whose every layer views the batch-1 `cache` as `rows` rows (no copy)."""
    return _map_cache(cache, lambda t: t.expand(rows, -1, -1, -1))


def select_cache(cache, rows: torch.Tensor):
    """A new cache holding rows `rows` (a 1-D index tensor) of `cache`; rows may repeat."""
    return _map_cache(cache, lambda t: t.index_select(0, rows))


def pad_cache(cache, length: int):
    """A new cache zero-padded after its positions to `length` positions."""
    return _map_cache(cache, lambda t: F.pad(t, (0, 0, 0, length - t.shape[-2])))


def cat_caches(caches: Sequence):
    """One cache holding the rows of `caches` in order (all over the same positions)."""
    new = copy.copy(caches[0])
    new.layers = []
    for layers in zip(*(c.layers for c in caches)):
        clone = copy.copy(layers[0])
        clone.keys = torch.cat([layer.keys for layer in layers])
        clone.values = torch.cat([layer.values for layer in layers])
        new.layers.append(clone)
    return new


def _map_cache(cache, fn: Callable[[torch.Tensor], torch.Tensor]):
    """A new cache whose every layer's keys and values are `fn` of the old ones."""
    new = copy.copy(cache)
    new.layers = []
    for layer in cache.layers:
        clone = copy.copy(layer)
        clone.keys, clone.values = fn(layer.keys), fn(layer.values)
        new.layers.append(clone)
    return new
