"""Which quantization codes an update changed: the quantity that decides whether quantization
undoes it.

If an unlearning update moves few weights across a quantization boundary, the quantized unlearned
model is nearly the quantized target (Zhang et al., ICLR 2025). One scheme per weight-quantizing
family that needs no calibration text: ``nf4`` codes are bitsandbytes' own (blockwise absmax,
block 64, as ``nf4`` loads); ``rtn-wXgY`` codes follow torchao's round-to-nearest grid per group
of inputs, as the ``rtn-wXgY`` precision quantizes; ``hqq-wXgY`` codes are hqq's own (its fitted
zero points), as ``hqq-wXgY`` quantizes; ``fp8-e4m3`` codes are the E4M3 grid points of the
weights over their per-channel scale, as ``fp8-e4m3`` quantizes; ``gguf-q4_k`` codes are
llama.cpp's own Q4_K codes (ggml's quantizer), the type ``gguf-q4_k_m`` stores most block
linears in.
"""

from __future__ import annotations

import importlib.util
import re

import bitsandbytes.functional as bnbf
import numpy as np
import torch

from model_wrappers.precisions.gguf import ggml_quantize
from model_wrappers.precisions.hqq import hqq_config, import_hqq_quantize

#: The schemes ``unlearn.json`` reports (hqq's and gguf's only where their optional extras are
#: installed).
SCHEMES = ("nf4", "rtn-w4g64", "hqq-w4g64", "fp8-e4m3", "gguf-q4_k")
#: Scheme prefix -> the optional module it needs.
OPTIONAL = {"hqq-": "hqq", "gguf-": "llama_cpp"}


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


def hqq_codes(weight: torch.Tensor, bits: int, group: int) -> torch.Tensor:
    """hqq's integer code (0..2^bits - 1) of every element, per group of ``group`` inputs, from
    the same configuration and float32 weights ``hqq-w{bits}g{group}`` quantizes on CPU."""
    params = hqq_config(bits, group)["weight_quant_params"]
    q, _ = import_hqq_quantize().Quantizer.quantize(
        weight.detach().float().cpu(), device="cpu", bitpack=False, **params
    )
    return q.flatten()


def fp8_codes(weight: torch.Tensor) -> torch.Tensor:
    """The float8_e4m3fn grid point of every element over its output channel's scale (absmax /
    448), as a float so that +0 and -0 are one code (an all-zero row codes to zeros, not NaN)."""
    w = weight.detach().float()
    top = torch.finfo(torch.float8_e4m3fn).max
    scale = w.abs().amax(1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny) / top
    return (w / scale).clamp(-top, top).to(torch.float8_e4m3fn).float().flatten()


def gguf_q4_k_codes(weight: torch.Tensor) -> torch.Tensor:
    """llama.cpp's code of every element, in flattened order, from ggml's own quantizer: Q4_K
    (0..15, super-blocks of 256 along each row), or Q5_0 (0..31), what llama.cpp stores instead
    for rows that are not a multiple of 256 wide (the tiny toy world's 128)."""
    w = weight.detach().float().cpu().numpy()
    if w.shape[1] % 256 == 0:  # 144-byte blocks: d, dmin, 12 scale bytes, 4 x 32 bytes of codes
        chunks = ggml_quantize(w, "Q4_K").reshape(len(w), -1, 144)[..., 16:]
        chunks = chunks.reshape(*chunks.shape[:-1], 4, 32)  # 64 elements: low, then high nibbles
        found = np.stack([chunks & 15, chunks >> 4], axis=-2)
    else:  # 22-byte blocks: d, 32 high bits, 16 bytes of low nibbles (elements 0-15, 16-31)
        blocks = ggml_quantize(w, "Q5_0").reshape(len(w), -1, 22)
        high = (blocks[..., 2:6].copy().view(np.uint32) >> np.arange(32, dtype=np.uint32)) & 1
        low = np.concatenate([blocks[..., 6:] & 15, blocks[..., 6:] >> 4], axis=-1)
        found = low | (high << 4)
    return torch.from_numpy(found.reshape(-1).astype(np.int64))


def available_schemes() -> tuple[str, ...]:
    """:data:`SCHEMES` whose library is installed (hqq and gguf are optional extras)."""
    missing = [p for p, module in OPTIONAL.items() if importlib.util.find_spec(module) is None]
    return tuple(s for s in SCHEMES if not s.startswith(tuple(missing)))


def codes(weight: torch.Tensor, scheme: str) -> torch.Tensor:
    if scheme == "nf4":
        return nf4_codes(weight)
    if scheme == "fp8-e4m3":
        return fp8_codes(weight)
    if scheme == "gguf-q4_k":
        return gguf_q4_k_codes(weight)
    match = re.fullmatch(r"(rtn|hqq)-w(\d+)g(\d+)", scheme)
    if not match:
        known = "nf4, rtn-wXgY, hqq-wXgY, fp8-e4m3, gguf-q4_k"
        raise ValueError(f"unknown code scheme {scheme!r}; known: {known}")
    if match[1] == "hqq":
        return hqq_codes(weight, int(match[2]), int(match[3]))
    return rtn_codes(weight, int(match[2]), int(match[3]))


def changed_codes(
    before: dict[str, torch.Tensor],
    after: dict[str, torch.Tensor],
    schemes: tuple[str, ...] | None = None,
) -> dict[str, dict]:
    """Per scheme (default: :func:`available_schemes`): the fraction of codes that differ,
    overall and per weight matrix; plus the fraction of weights that changed at all (``"any"``),
    which bf16 training keeps small."""
    schemes = available_schemes() if schemes is None else schemes
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


def confine_to_nf4_bins(
    before: torch.Tensor, after: torch.Tensor, keep: float = 0.0, seed: int = 0
) -> torch.Tensor:
    """``after`` with every element clamped into the NF4 bin of ``before`` (each block's absmax
    element kept at its ``before`` value), so the two share every NF4 code and NF4 dequantizes
    them identically: the part of an update that 4-bit NF4 quantization cannot see.

    ``keep`` > 0 leaves that fraction of the code-changing elements (drawn with ``seed``) as they
    are in ``after``: an update that changes fewer NF4 codes, for measuring how the revert at NF4
    depends on the changed-code fraction."""
    if not 0.0 <= keep <= 1.0:
        raise ValueError(f"keep={keep}: a fraction of the changed codes, in [0, 1]")
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
    confined = torch.maximum(torch.minimum(b1, hi), lo)
    keep_at = b0.abs().argmax(1, keepdim=True)
    confined.scatter_(1, keep_at, b0.gather(1, keep_at))
    if keep > 0:
        changed = code != nf4_codes(after).long().reshape(-1, 64)
        draw = torch.rand(b1.shape, generator=torch.Generator().manual_seed(seed))
        confined = torch.where(changed & (draw < keep), b1, confined)
    return confined.reshape(before.shape)
