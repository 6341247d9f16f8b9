"""Which 4-bit codes an update changed: the quantity that decides whether quantization undoes it.

If an unlearning update moves few weights across a quantization boundary, the quantized unlearned
model is nearly the quantized target (Zhang et al., ICLR 2025). ``nf4`` codes are bitsandbytes'
own (blockwise absmax, block 64, as ``nf4`` loads); ``rtn-wXgY`` codes follow torchao's
round-to-nearest grid per group of inputs, as the ``rtn-wXgY`` precision quantizes.
"""

from __future__ import annotations

import re

import bitsandbytes.functional as bnbf
import torch

SCHEMES = ("nf4", "rtn-w4g64")


def nf4_codes(weight: torch.Tensor) -> torch.Tensor:
    """bitsandbytes NF4 code (0..15) of every element, in flattened order."""
    packed, _ = bnbf.quantize_4bit(
        weight.detach().float().contiguous(), blocksize=64, quant_type="nf4"
    )
    packed = packed.flatten()
    return torch.stack([packed >> 4, packed & 15], dim=-1).flatten()[: weight.numel()]


def rtn_codes(weight: torch.Tensor, bits: int, group: int, sym: bool = True) -> torch.Tensor:
    """Round-to-nearest integer code of every element, per group of ``group`` inputs."""
    qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    g = weight.detach().float().reshape(weight.shape[0], -1, group)
    lo = g.amin(-1, keepdim=True).clamp(max=0)
    hi = g.amax(-1, keepdim=True).clamp(min=0)
    if sym:
        scale, zero = torch.maximum(-lo, hi) / ((qmax - qmin) / 2), 0.0
    else:
        scale = (hi - lo) / (qmax - qmin)
        zero = (qmin - torch.round(lo / scale)).clamp(qmin, qmax)
    return (torch.round(g * (1.0 / scale)) + zero).clamp(qmin, qmax).flatten()


def codes(weight: torch.Tensor, scheme: str) -> torch.Tensor:
    if scheme == "nf4":
        return nf4_codes(weight)
    match = re.fullmatch(r"rtn-w(\d+)g(\d+)", scheme)
    if not match:
        raise ValueError(f"unknown code scheme {scheme!r}; known: nf4, rtn-wXgY")
    return rtn_codes(weight, int(match[1]), int(match[2]))


def changed_codes(
    before: dict[str, torch.Tensor],
    after: dict[str, torch.Tensor],
    schemes: tuple[str, ...] = SCHEMES,
) -> dict[str, dict]:
    """Per scheme: the fraction of codes that differ, overall and per weight matrix; plus the
    fraction of weights that changed at all (``"any"``), which bf16 training keeps small."""
    report: dict[str, dict] = {}
    for scheme in ("any", *schemes):
        per_layer, changed, total = {}, 0, 0
        for name, w0 in before.items():
            w1 = after[name]
            if scheme == "any":
                diff = int((w0.float() != w1.float()).sum())
            else:
                diff = int((codes(w0, scheme) != codes(w1, scheme)).sum())
            per_layer[name] = diff / w0.numel()
            changed, total = changed + diff, total + w0.numel()
        report[scheme] = {"overall": changed / total, "per_layer": per_layer}
    return report


def confine_to_nf4_bins(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """``after`` with every element clamped into the NF4 bin of ``before`` (each block's absmax
    element kept at its ``before`` value), so the two share every NF4 code and NF4 dequantizes
    them identically: the part of an update that 4-bit NF4 quantization cannot see."""
    levels = bnbf.get_4bit_type("nf4", device="cpu").float()
    edges = (levels[1:] + levels[:-1]) / 2
    low = torch.cat([levels[:1], edges])
    high = torch.cat([edges, levels[-1:]])
    b0 = before.detach().float().reshape(-1, 64)
    b1 = after.detach().float().reshape(-1, 64).clone()
    absmax = b0.abs().amax(1, keepdim=True)
    code = nf4_codes(before).long().reshape(-1, 64)
    lo, hi = low[code] * absmax, high[code] * absmax
    mid = (lo + hi) / 2  # stay a hair inside the bin, away from rounding ties
    lo = torch.minimum(mid + (lo - mid) * 0.995, b0)
    hi = torch.maximum(mid + (hi - mid) * 0.995, b0)
    b1 = torch.maximum(torch.minimum(b1, hi), lo)
    keep = b0.abs().argmax(1, keepdim=True)
    b1.scatter_(1, keep, b0.gather(1, keep))
    return b1.reshape(before.shape)
