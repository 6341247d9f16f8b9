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
    """A parametrization: the NF4-rounded weight forward, the identity backward.

    The rounding is kept until the weight changes (its in-place version counter moves at each
    optimizer step), so a step's several forward passes (forget, retain) round it once."""

    def __init__(self) -> None:
        super().__init__()
        self._rounded: tuple[tuple[int, int], torch.Tensor] | None = None

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        key = (weight.data_ptr(), weight._version)
        if self._rounded is None or self._rounded[0] != key:
            self._rounded = (key, nf4_round_trip(weight))
        return weight + (self._rounded[1] - weight).detach()


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
