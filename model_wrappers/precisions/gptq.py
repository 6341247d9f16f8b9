"""GPTQ through gptqmodel (``gptq-w{bits}g{group}``): calibrated, quantized once and cached.

auto-gptq is archived and does not import with transformers 5; gptqmodel is its maintained
successor (the optional ``gptq`` extra). Quantizing, caching and loading back go through
``gptqmodel_checkpoints.py``, which AWQ shares.
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
    Option,
    Precision,
    Source,
    entry,
    open_fraction,
    parse_bool,
    positive_int,
)
from model_wrappers.precisions.gptqmodel_checkpoints import (
    import_gptqmodel,
    library_record,
    load_quantized,
    quantized_checkpoint,
    refuse_cuda_kernel,
)

#: gptqmodel kernels that only run on CUDA; ``torch`` runs anywhere.
GPTQ_CUDA_BACKENDS = ("marlin", "exllama_v2", "machete", "triton", "bitblas")
GPTQ_BACKENDS = ("torch", "auto", *GPTQ_CUDA_BACKENDS)


def _gptq_dequantize(module: nn.Module) -> torch.Tensor | None:
    kernel = import_gptqmodel("GPTQ").nn_modules.qlinear.BaseQuantLinear  # optional

    if isinstance(module, kernel):
        return module.dequantize_weight().T
    return None


def _parse_backend(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in GPTQ_BACKENDS:
        raise ValueError(f"expected one of {', '.join(GPTQ_BACKENDS)}")
    return text


GPTQ = Family("gptqmodel", _gptq_dequantize, calibrated=True)
GPTQ_OPTIONS = {
    "sym": Option(True, parse_bool, "symmetric quantization grid"),
    "desc_act": Option(False, parse_bool, "quantize columns by decreasing activation order"),
    "damp_percent": Option(0.05, open_fraction, "Hessian dampening, in (0, 1)"),
    "calibration_size": Option(256, positive_int, "at most this many calibration texts"),
    "compute_dtype": COMPUTE_DTYPE,
    "backend": Option("torch", _parse_backend, "gptqmodel kernel"),
}


def quantize_gptq(source: Source, precision: Precision) -> Built:
    """GPTQ with gptqmodel: quantized once from float32 weights on the calibration texts and
    cached (keyed by weights hash, precision and calibration), then loaded with its kernels."""
    gptqmodel = import_gptqmodel("GPTQ")
    bits, group = precision.params["bits"], precision.params["group_size"]
    options = precision.options
    if not 2 <= bits <= 8:
        raise MuseQuantError(f"{precision.name}: gptqmodel quantizes 2 to 8 bits, not {bits}")
    refuse_cuda_kernel(precision, source.device, GPTQ_CUDA_BACKENDS)
    quantize = {
        "bits": bits,
        "group_size": group,
        "sym": options["sym"],
        "desc_act": options["desc_act"],
        "damp_percent": options["damp_percent"],
    }
    folder, hit = quantized_checkpoint(gptqmodel, source, precision, quantize, "GPTQ")
    model = load_quantized(gptqmodel, folder, source, precision)
    return model, library_record(folder, hit, precision)


PRECISIONS = (
    entry(
        r"gptq-w(?P<bits>\d+)g(?P<group_size>\d+)", quantize_gptq, GPTQ, GPTQ_OPTIONS,
        "gptq-w{bits}g{group}",
    ),
)  # fmt: skip
