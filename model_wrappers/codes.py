"""Which quantization codes an update changed: the quantity that decides whether quantization
undoes it.

If an unlearning update moves few weights across a quantization boundary, the quantized unlearned
model is nearly the quantized target (Zhang et al., ICLR 2025). A scheme is a precision whose
backend gives its codes (``codes=`` on its entry, ``precisions/<backend>.py``): ``nf4``
(bitsandbytes' blockwise absmax codes), ``rtn-wXgY`` (torchao's round-to-nearest grid),
``hqq-wXgY`` (hqq's fitted zero points), ``fp8-e4m3`` (E4M3 grid points over per-channel
scales) and ``gguf-q4_k`` (ggml's own Q4_K codes, the type ``gguf-q4_k_m`` stores most block
linears in); each computed as that precision quantizes.
"""

from __future__ import annotations

import importlib.util

import torch

from model_wrappers.precisions import Precision, resolve_precision
from model_wrappers.precisions.bitsandbytes import nf4_codes

#: The schemes ``unlearn.json`` reports, and the precision whose codes each counts (hqq's and
#: gguf's only where their optional extras are installed).
SCHEMES = {
    "nf4": "nf4",
    "rtn-w4g64": "rtn-w4g64",
    "hqq-w4g64": "hqq-w4g64",
    "fp8-e4m3": "fp8-e4m3",
    "gguf-q4_k": "gguf-q4_k_m",
}


def scheme_precision(scheme: str) -> Precision:
    """The precision whose codes ``scheme`` counts (a :data:`SCHEMES` name or a precision's)."""
    precision = resolve_precision(SCHEMES.get(scheme, scheme))
    if precision.codes is None:
        known = ", ".join(SCHEMES)
        raise ValueError(f"{scheme}: its backend gives no codes to count; schemes: {known}")
    return precision


def available_schemes() -> tuple[str, ...]:
    """:data:`SCHEMES` whose library is installed (hqq and gguf are optional extras)."""
    return tuple(
        scheme
        for scheme, name in SCHEMES.items()
        if (needs := resolve_precision(name).family.requires) is None
        or importlib.util.find_spec(needs) is not None
    )


def codes(weight: torch.Tensor, scheme: str) -> torch.Tensor:
    """The code of every element of ``weight`` under ``scheme``, in flattened order."""
    precision = scheme_precision(scheme)
    assert precision.codes is not None
    return precision.codes(weight, precision)


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
        if scheme != "any":
            precision = scheme_precision(scheme)
            code = precision.codes
            assert code is not None
        per_layer, changed, total = {}, 0, 0
        for name, w0 in before.items():
            w1 = after[name]
            if scheme == "any":
                diff = int((w0.float() != w1.float()).sum())
            else:
                diff = int((code(w0, precision) != code(w1, precision)).sum())
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
    import bitsandbytes.functional as bnbf  # loaded when codes are confined

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
