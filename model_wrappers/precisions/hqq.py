"""HQQ through the hqq library's own API (``hqq-w{bits}g{group}``): affine groups, no calibration.

Half-Quadratic Quantization fits each group's zero point by minimising the weights' own
rounding error (a few proximal steps), so it needs no calibration text. We call hqq directly
(``BaseQuantizeConfig`` + ``HQQLinear``, its PyTorch backend: dequantize, then matmul in
``compute_dtype``) rather than transformers' ``HqqConfig``, so what is quantized and how is
ours to record. hqq is optional (the ``hqq`` extra).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from harness_ext.errors import MuseQuantError
from model_wrappers.precisions.base import (
    COMPUTE_DTYPE,
    Built,
    Family,
    Precision,
    Source,
    entry,
)
from model_wrappers.precisions.emulation import check_group_size, quantized_linear_names

HQQ_INSTALL = "pip install 'muse-quant[hqq]' (hqq 0.2.8)"
#: The integer widths hqq packs (its 1.58-bit ternary mode has no integer name here).
HQQ_BITS = (1, 2, 3, 4, 5, 6, 8)


def import_hqq_quantize() -> Any:
    """``hqq.core.quantize``, or a one-line error saying how to install hqq."""
    try:
        import hqq.core.quantize as quantize  # optional (the hqq extra); seconds to import
    except ImportError as e:
        raise MuseQuantError(f"HQQ precisions need hqq ({e}); {HQQ_INSTALL}") from None
    return quantize


def hqq_config(bits: int, group: int) -> dict[str, Any]:
    """hqq's own ``BaseQuantizeConfig`` for ``hqq-w{bits}g{group}``, refusing what it cannot do."""
    if bits not in HQQ_BITS:
        supported = ", ".join(map(str, HQQ_BITS))
        raise MuseQuantError(f"hqq-w{bits}g{group}: hqq quantizes {supported} bits, not {bits}")
    if group % 8:
        raise MuseQuantError(
            f"hqq-w{bits}g{group}: hqq needs a group size that is a multiple of 8, not {group}"
        )
    return import_hqq_quantize().BaseQuantizeConfig(nbits=bits, group_size=group)


def _hqq_dequantize(module: nn.Module) -> torch.Tensor | None:
    from hqq.core.quantize import HQQLinear  # loaded when an HQQ precision is built

    return module.dequantize() if isinstance(module, HQQLinear) else None


HQQ = Family("hqq", _hqq_dequantize, requires="hqq")
HQQ_OPTIONS = {"compute_dtype": COMPUTE_DTYPE}


def quantize_hqq(source: Source, precision: Precision) -> Built:
    """Every block linear replaced by hqq's ``HQQLinear``, quantized from the float32 weights
    in groups of ``group`` inputs."""
    bits, group = precision.params["bits"], precision.params["group_size"]
    config = hqq_config(bits, group)
    quantize = import_hqq_quantize()
    model = source.load(dtype=torch.float32)
    check_group_size(model, precision)
    compute = precision.compute_dtype
    for name in quantized_linear_names(model):
        layer = quantize.HQQLinear(
            model.get_submodule(name), config, compute_dtype=compute, device=source.device
        )
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, layer)
    if compute != torch.float32:  # the rest of the model computes in compute_dtype too
        model.to(compute)  # HQQLinear keeps its uint8 codes and compute_dtype scales as they are
    return model, {
        "quant_config": config,
        "backend": quantize.HQQLinear.backend.name,
    }


def hqq_codes(weight: torch.Tensor, precision: Precision) -> torch.Tensor:
    """hqq's integer code (0..2^bits - 1) of every element, per group of ``group`` inputs, from
    the same configuration and float32 weights ``hqq-w{bits}g{group}`` quantizes on CPU."""
    bits, group = precision.params["bits"], precision.params["group_size"]
    params = hqq_config(bits, group)["weight_quant_params"]
    q, _ = import_hqq_quantize().Quantizer.quantize(
        weight.detach().float().cpu(), device="cpu", bitpack=False, **params
    )
    return q.flatten()


PRECISIONS = (
    entry(
        r"hqq-w(?P<bits>\d+)g(?P<group_size>\d+)", quantize_hqq, HQQ, HQQ_OPTIONS,
        "hqq-w{bits}g{group}", codes=hqq_codes,
    ),
)  # fmt: skip
