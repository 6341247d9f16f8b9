"""Each row's prompt prefilled alone, then decoded with the others in one batch.

A left-padded batch prefills through an attention mask, which on CPU rules out the causal
kernel: every row attends over the whole padded square, about twice the attention of its own
triangle, plus the padding's own rows (VerbMem's 1.2k-token prompts, 16 per batch, one thread:
7.6 s prefilled as a batch). Prefilled one at a time, a prompt runs exactly as a batch-1
evaluator runs it (no padding, the causal kernel); its cache, all but the last token, is then
placed right-aligned in a left-padded batch cache (padding masked out; generation derives each
row's positions from the attention mask, so every token keeps its own), and ``generate`` goes on
from there for the whole batch, where batching pays: the decoding.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import DynamicLayer


@torch.no_grad()
def prefilled_rows(model: Any, context: torch.Tensor, mask: torch.Tensor) -> Any:
    """The key/value cache of every left-padded row of ``context`` but its last token, each row
    computed alone, as one batch cache (``width - 1`` positions); None where the model's cache
    is not a plain growing one (sliding windows, linear attention)."""
    width = context.shape[1]
    lengths = mask.sum(-1).tolist()
    # Only the cache is wanted: no vocabulary logits where the model can skip them.
    supports = getattr(model, "_supports_logits_to_keep", None)
    keep = {"logits_to_keep": 1} if callable(supports) and supports() else {}
    rows = [
        model(context[i, width - n : width - 1][None], use_cache=True, **keep).past_key_values
        for i, n in enumerate(lengths)
    ]
    batch = rows[0]
    if not all(type(layer) is DynamicLayer for row in rows for layer in row.layers):
        return None
    for index, layer in enumerate(batch.layers):
        keys, values = (
            torch.zeros((len(rows), *t.shape[1:2], width - 1, t.shape[-1]), dtype=t.dtype,
                        device=t.device)
            for t in (layer.keys, layer.values)
        )  # fmt: skip
        for i, row in enumerate(rows):
            cached = row.layers[index]
            start = width - lengths[i]
            keys[i, :, start:] = cached.keys[0]
            values[i, :, start:] = cached.values[0]
        layer.keys, layer.values = keys, values
    return batch
