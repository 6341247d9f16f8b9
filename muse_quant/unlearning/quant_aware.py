"""Quantization-aware unlearning: train through the 4-bit weights a deployment will run.

Each block linear's forward pass uses its weight rounded to NF4 (bitsandbytes' own blockwise
quantization, block 64, as the ``nf4`` precision loads it), and the gradient passes straight
through the rounding to the full-precision weight (the straight-through estimator; the idea of
arXiv 2605.02196). The optimizer updates, and the run saves, the full-precision weights: their
NF4 rounding is the model the forget loss was computed on, so an NF4 deployment cannot undo it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize


def nf4_round_trip(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` quantized to NF4 and dequantized, in its own dtype."""
    import bitsandbytes.functional as bnbf

    flat = weight.detach().float().contiguous()
    packed, state = bnbf.quantize_4bit(flat, blocksize=64, quant_type="nf4")
    return bnbf.dequantize_4bit(packed, state).reshape(weight.shape).to(weight.dtype)


class StraightThroughNF4(nn.Module):
    """A parametrization: the NF4-rounded weight forward, the identity backward. The rounding is
    redone at every access: the Trainer's fused AdamW updates weights without moving their
    version counter, so a rounding kept "until the weight changes" would go stale."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + (nf4_round_trip(weight) - weight).detach()


@contextlib.contextmanager
def through_nf4(model: nn.Module, names: list[str]) -> Iterator[None]:
    """Within this block the named linears compute with NF4-rounded weights; on leaving, each
    weight is the trained full-precision tensor again (the same parameter the optimizer held)."""
    for name in names:
        parametrize.register_parametrization(model.get_submodule(name), "weight",
                                             StraightThroughNF4())  # fmt: skip
    try:
        yield
    finally:
        for name in names:
            parametrize.remove_parametrizations(
                model.get_submodule(name), "weight", leave_parametrized=False
            )
