"""Emulated mode and the layers weight-only quantizers target, shared by the backends.

``emulated=true`` replaces each quantized module by a dense float32 ``nn.Linear`` holding the
library's own dequantization of its weight: the same rounding, without the library's kernels.
"""

from __future__ import annotations

from torch import nn

from harness_ext.errors import MuseQuantError
from model_wrappers.precisions.base import Family, Precision


def emulate(model: nn.Module, family: Family) -> int:
    """Replace every module ``family`` quantized by a dense float32 ``nn.Linear`` holding the
    library's own dequantization of its weight; return how many were replaced."""
    assert family.dequantize is not None
    replaced = 0
    for name, module in list(model.named_modules()):
        weight = family.dequantize(module)
        if weight is None:
            continue
        bias = getattr(module, "bias", None)
        dense = nn.Linear(
            weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device
        )
        dense.weight = nn.Parameter(weight.detach().float(), requires_grad=False)
        if bias is not None:
            dense.bias = nn.Parameter(bias.detach().float(), requires_grad=False)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, dense)
        replaced += 1
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:  # what transformers' own dequantize() does afterwards
        quantizer.remove_quantization_config(model)
    return replaced


def quantized_linear_names(model: nn.Module) -> list[str]:
    """The linears a weight-only quantizer targets: all but the output head."""
    head = model.get_output_embeddings()
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and m is not head]


def check_group_size(model: nn.Module, precision: Precision) -> None:
    """Refuse a group size that does not divide a quantized layer's input width."""
    group = precision.params["group_size"]
    for name in quantized_linear_names(model):
        width = model.get_submodule(name).in_features
        if width % group:
            raise MuseQuantError(
                f"{precision.name}: group size {group} does not divide the input width {width} "
                f"of {name}; choose a group size that divides it"
            )

