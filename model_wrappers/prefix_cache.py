"""A prompt prefix shared by every row of a generation batch, computed once.

KnowMem's prompts are one task's in-context pairs (~1.1k characters on MUSE) followed by the
question (~60): without reuse, nine tenths of KnowMem's prefill recomputes the same prefix. Here
a left-padded batch is rearranged as ``prefix | padding | question`` (padding masked out; the
position ids generation derives from the attention mask skip it, so each question sits exactly
where it sat after the prefix), and the prefix's key/value cache is computed once per prefix and
handed to ``generate``: the same computation, per row, as the whole prompt alone.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

#: A shared prefix shorter than this is not worth a separate pass.
MIN_SHARED_TOKENS = 32


def shared_prefix_length(context: torch.Tensor, mask: torch.Tensor) -> int:
    """Tokens every row starts with after its left padding, leaving each row one token of its
    own (generation needs at least one uncached input token)."""
    lengths = mask.sum(-1).tolist()
    width = context.shape[1]
    rows = [context[i, width - n :] for i, n in enumerate(lengths)]
    shortest = min(lengths) - 1
    first = rows[0][:shortest]
    same = torch.ones(shortest, dtype=torch.bool, device=context.device)
    for row in rows[1:]:
        same &= row[:shortest] == first
    mismatch = (~same).nonzero()
    return int(mismatch[0]) if len(mismatch) else shortest


def move_padding_after(
    context: torch.Tensor, mask: torch.Tensor, prefix: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``prefix | padding | rest`` from a left-padded batch (same width, same tokens)."""
    width = context.shape[1]
    out, out_mask = context.clone(), mask.clone()
    for i, n in enumerate(mask.sum(-1).tolist()):
        start = width - n
        out[i, :prefix] = context[i, start : start + prefix]
        out[i, prefix : start + prefix] = context[i, :start]  # the padding tokens
        out_mask[i, :prefix] = 1
        out_mask[i, prefix : start + prefix] = 0
        out_mask[i, start + prefix :] = 1
    return out, out_mask


class PrefixCache:
    """The key/value cache of the last shared prefix, reused while the prefix stays the same."""

    def __init__(self) -> None:
        self._tokens: tuple[int, ...] | None = None
        self._cache: Any = None

    @torch.no_grad()
    def for_batch(self, model: Any, prefix: torch.Tensor, rows: int) -> Any:
        """A fresh copy of the prefix's cache for ``rows`` rows (``generate`` extends it)."""
        tokens = tuple(prefix.tolist())
        if tokens != self._tokens:
            # Only the cache is kept: the vocabulary logits of every prefix position (a 1k-token
            # prefix at a 32k vocabulary: 128 MB in float32, 40% of this pass on a small model)
            # are not computed where the model can skip them. The cache is the same either way.
            supports = getattr(model, "_supports_logits_to_keep", None)
            keep = {"logits_to_keep": 1} if callable(supports) and supports() else {}
            self._cache = model(prefix[None], use_cache=True, **keep).past_key_values
            self._tokens = tokens
        cache = copy.deepcopy(self._cache)
        cache.batch_repeat_interleave(rows)
        return cache
