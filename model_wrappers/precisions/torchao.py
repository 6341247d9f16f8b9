"""Round-to-nearest through torchao (``rtn-w{bits}g{group}``): per-group weight-only integers."""

from __future__ import annotations

import torch
from torch import nn

from harness_ext.errors import MuseQuantError
from model_wrappers.precisions.base import (
    Built,
    Family,
    Option,
    Precision,
    Source,
    entry,
    parse_bool,
)
from model_wrappers.precisions.emulation import check_group_size, quantized_linear_names


def torchao_dequantize(module: nn.Module) -> torch.Tensor | None:
    """A torchao-quantized weight dequantized (its own ``dequantize``); None for other modules."""
    from torchao.utils import TorchAOBaseTensor  # torchao loads its kernels on import

    weight = getattr(module, "weight", None)
    return weight.dequantize() if isinstance(weight, TorchAOBaseTensor) else None


RTN = Family("torchao", torchao_dequantize)
RTN_OPTIONS = {
    "sym": Option(True, parse_bool, "symmetric grid (scale = absmax / (2^bits - 1) * 2, zero 0)"),
}


def quantize_rtn(source: Source, precision: Precision) -> Built:
    """Round-to-nearest weight-only quantization per group (torchao ``IntxWeightOnlyConfig``)."""
    # torchao loads its kernels (and warns about the missing ones) on import.
    from torchao.quantization import IntxWeightOnlyConfig, MappingType, quantize_
    from torchao.quantization.granularity import PerGroup

    bits, group = precision.params["bits"], precision.params["group_size"]
    if not 1 <= bits <= 8:
        raise MuseQuantError(f"{precision.name}: torchao quantizes 1 to 8 bits, not {bits}")
    model = source.load(dtype=torch.float32)
    check_group_size(model, precision)
    mapping = MappingType.SYMMETRIC if precision.options["sym"] else MappingType.ASYMMETRIC
    config = IntxWeightOnlyConfig(
        weight_dtype=getattr(torch, f"int{bits}"), granularity=PerGroup(group), mapping_type=mapping
    )
    targets = set(quantized_linear_names(model))
    quantize_(model, config, filter_fn=lambda _module, fqn: fqn in targets)
    return model, {
        "config": {
            "class": type(config).__name__,
            "weight_dtype": f"int{bits}",
            "granularity": f"PerGroup({group})",
            "mapping_type": mapping.name,
            "packing_format": str(config.intx_packing_format.value),
            "version": config.version,
        }
    }


def rtn_codes(weight: torch.Tensor, precision: Precision) -> torch.Tensor:
    """Round-to-nearest integer code of every element, per group of ``group`` inputs, on the
    grid ``rtn-w{bits}g{group}`` quantizes to."""
    bits, group = precision.params["bits"], precision.params["group_size"]
    sym = precision.options["sym"]
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


PRECISIONS = (
    entry(
        r"rtn-w(?P<bits>\d+)g(?P<group_size>\d+)", quantize_rtn, RTN, RTN_OPTIONS,
        "rtn-w{bits}g{group}", codes=rtn_codes,
    ),
)  # fmt: skip
