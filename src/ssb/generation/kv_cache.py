"""The hf backend's KV cache for continuous batching (imported lazily: it imports transformers).

:class:`SpareRoomLayer` is a full-attention cache layer whose keys/values are views into a
buffer with spare room along the sequence axis, so a decoding step writes its token in place
where transformers' ``DynamicLayer`` concatenates (copies) the whole cache every step.
:func:`merge` joins two batches of rows laid out ``[shared prefix | padding | own tokens]``
(the attention mask zero on the padding), dropping the columns no row attends to.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

ROOM = 64  # spare columns a (re)allocated buffer gets beyond what it holds


class SpareRoomLayer(DynamicLayer):
    """``DynamicLayer`` writing new tokens into a preallocated buffer (see the module docstring)."""

    def __init__(self, keys: torch.Tensor | None = None, values: torch.Tensor | None = None):
        super().__init__()
        self._k = self._v = None  # the buffers; keys/values are their first get_seq_length() columns
        if keys is not None:
            self.lazy_initialization(keys, values)
            self.keys, self.values = keys, values  # may be views (expanded rows): copied on the first write

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n = self.get_seq_length()
        end = n + key_states.shape[-2]
        if self._k is None or end > self._k.shape[-2] or self._k.shape[0] != key_states.shape[0]:
            self._k, self._v = _buffer(key_states, end), _buffer(value_states, end)
            if n:
                self._k[:, :, :n], self._v[:, :, :n] = self.keys, self.values
        self._k[:, :, n:end], self._v[:, :, n:end] = key_states, value_states
        self.keys, self.values = self._k[:, :, :end], self._v[:, :, :end]
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.get_seq_length() == 0:
            return
        if self._k is None:  # no buffer yet (views of another cache): plain rows, regrown on the next write
            self.keys, self.values = self.keys[indices], self.values[indices]
            return
        n = self.keys.shape[-2]
        self._k, self._v = self._k[indices], self._v[indices]
        self.keys, self.values = self._k[:, :, :n], self._v[:, :, :n]


def _buffer(like: torch.Tensor, used: int, rows: int | None = None) -> torch.Tensor:
    b, h, _, d = like.shape
    return like.new_empty((b if rows is None else rows, h, used + max(ROOM, used // 2), d))


def spare_room_cache(model, layers: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> DynamicCache | None:
    """A ``DynamicCache`` for ``model`` made of :class:`SpareRoomLayer` (holding ``layers``'
    keys/values if given); None when the model's cache is not plain full attention (sliding
    windows and recurrent layers would see padding columns differently)."""
    cache = DynamicCache(config=model.config)
    if not all(type(layer) is DynamicLayer for layer in cache.layers):
        return None
    cache.layers = [SpareRoomLayer(*kv) for kv in layers] if layers else [SpareRoomLayer() for _ in cache.layers]
    return cache


def plain_cache(model) -> DynamicCache:
    return DynamicCache(config=model.config)


def merge(a: DynamicCache, mask_a: torch.Tensor, rows_a: torch.Tensor | None, b: DynamicCache,
          mask_b: torch.Tensor, n_pre: int) -> torch.Tensor:
    """``a``'s rows ``rows_a`` (all: None) followed by ``b``'s rows, in ``a`` (in place); the
    joined ``[rows, columns]`` mask is returned.

    Both are laid out ``[n_pre shared prefix columns | padding | own tokens]``. Columns of
    ``a`` that none of its kept rows attends to (past the prefix) are dropped; the narrower
    side gets zero keys/values with mask 0 right after the prefix, so every row's tokens keep
    their order and their (explicit) positions."""
    if rows_a is not None:
        mask_a = mask_a[rows_a]
    keep = mask_a.any(0)
    keep[:n_pre] = True
    cols = None if bool(keep.all()) else keep.nonzero().squeeze(-1)
    if cols is not None:
        mask_a = mask_a[:, cols]
    width = max(mask_a.shape[1], mask_b.shape[1])
    n_a = mask_a.shape[0]

    def kept(t: torch.Tensor) -> torch.Tensor:
        if rows_a is not None:
            t = t.index_select(0, rows_a)
        return t if cols is None else t.index_select(2, cols)

    for la, lb in zip(a.layers, b.layers):
        ka, va = kept(la.keys), kept(la.values)
        k, v = _buffer(ka, width, n_a + lb.keys.shape[0]), _buffer(va, width, n_a + lb.values.shape[0])
        for dst, src_a, src_b in ((k, ka, lb.keys), (v, va, lb.values)):
            _place(dst[:n_a, :, :width], src_a, n_pre)
            _place(dst[n_a:, :, :width], src_b, n_pre)
        la._k, la._v = k, v
        la.keys, la.values = k[:, :, :width], v[:, :, :width]
    return torch.cat([_pad_mask(mask_a, width, n_pre), _pad_mask(mask_b, width, n_pre)])


def _place(dst: torch.Tensor, src: torch.Tensor, n_pre: int) -> None:
    """``src`` [b, h, w, d] into ``dst`` [b, h, width, d]: prefix first, the rest right-aligned, zeros between."""
    tail = src.shape[2] - n_pre
    gap_end = dst.shape[2] - tail
    dst[:, :, :n_pre] = src[:, :, :n_pre]
    dst[:, :, n_pre:gap_end] = 0
    dst[:, :, gap_end:] = src[:, :, n_pre:]


def _pad_mask(mask: torch.Tensor, width: int, n_pre: int) -> torch.Tensor:
    gap = width - mask.shape[1]
    if gap == 0:
        return mask
    return torch.cat([mask[:, :n_pre], mask.new_zeros((mask.shape[0], gap)), mask[:, n_pre:]], dim=1)
