"""AWQ through gptqmodel (``awq-w{bits}g{group}``): activation-aware scales, calibrated, cached.

AWQ scales each input channel of a block's linears by a factor searched on calibration
activations (folded back into the norm before them), clips each group's range, then rounds
to a b-bit grid per group of inputs. llmcompressor does not install with transformers 5.24 and
AutoAWQ is archived; gptqmodel, which absorbed AutoAWQ, quantizes and runs AWQ on CPU. Its
torch kernel (``AwqTorchLinear``) packs fp16/bf16 models only, so AWQ quantizes from the fp16
weights, and it multiplies in fp16 whatever the input's dtype (a float32 input is cast to fp16
and the output back).
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

#: gptqmodel's AWQ kernels for its ``gemm`` checkpoints that only run on CUDA.
AWQ_CUDA_BACKENDS = ("gemm", "marlin", "exllama_v2", "machete")
AWQ_BACKENDS = ("torch", *AWQ_CUDA_BACKENDS)


def _kernel(precision: Precision) -> str:
    """What multiplies: the library's kernel in fp16 (or bf16), or emulated float32 layers."""
    if precision.emulated:
        return "emulated: dense float32 weights, gptqmodel's fp16 dequantization done once"
    backend = precision.options["backend"]
    if backend != "torch":
        return f"gptqmodel AWQ {backend} kernel"
    compute = precision.options["compute_dtype"]
    dtype = "float16" if compute == "float32" else compute
    cast = f" ({compute} inputs cast to {dtype}, outputs back)" if compute != dtype else ""
    return f"gptqmodel AwqTorchLinear: weights dequantized to {dtype}, matmul in {dtype}{cast}"


def _awq_dequantize(module: nn.Module) -> torch.Tensor | None:
    import_gptqmodel("AWQ")  # optional; its banner on stderr
    from gptqmodel.nn_modules.qlinear import AWQuantLinear
    from gptqmodel.quantization.awq.utils.packing_utils import dequantize_gemm

    if not isinstance(module, AWQuantLinear):
        return None
    # AWQuantLinear inherits GPTQ's dequantize_weight, which reads GPTQ's packing, not AWQ's.
    weight = dequantize_gemm(
        module.qweight, module.qzeros, module.scales, module.bits, module.group_size
    )
    return weight.T


def _parse_backend(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in AWQ_BACKENDS:
        raise ValueError(f"expected one of {', '.join(AWQ_BACKENDS)}")
    return text


AWQ = Family("gptqmodel", _awq_dequantize, calibrated=True)
AWQ_OPTIONS = {
    "sym": Option(False, parse_bool, "symmetric grid (default: AWQ's zero-point grid)"),
    "calibration_size": Option(256, positive_int, "at most this many calibration texts"),
    "compute_dtype": COMPUTE_DTYPE,
    "backend": Option("torch", _parse_backend, "gptqmodel AWQ kernel"),
}


def quantize_awq(source: Source, precision: Precision) -> Built:
    """AWQ with gptqmodel: quantized once from the fp16 weights on the calibration texts into
    its ``gemm`` checkpoint format, cached (keyed by weights hash, AWQ config and calibration),
    then loaded with its kernels."""
    gptqmodel = import_gptqmodel("AWQ")
    from gptqmodel.nn_modules.qlinear.torch_awq import AwqTorchLinear  # the CPU kernel

    bits, group = precision.params["bits"], precision.params["group_size"]
    widths = [b for b in AwqTorchLinear.SUPPORTS_BITS if b > 0]
    groups = [g for g in AwqTorchLinear.SUPPORTS_GROUP_SIZE if g > 0]
    if bits not in widths or group not in groups:
        raise MuseQuantError(
            f"{precision.name}: gptqmodel's AWQ kernel takes {min(widths)} to {max(widths)} "
            f"bits and group sizes {', '.join(map(str, groups))}, not w{bits}g{group}"
        )
    refuse_cuda_kernel(precision, source.device, AWQ_CUDA_BACKENDS)
    config = {
        "bits": bits,
        "group_size": group,
        "sym": precision.options["sym"],
        "quant_method": "awq",
        "format": "gemm",
    }
    folder, hit = quantized_checkpoint(
        gptqmodel, source, precision, config, "AWQ", dtype=torch.float16, pack_backend="torch"
    )
    model = load_quantized(gptqmodel, folder, source, precision)
    return model, {**library_record(folder, hit, precision), "kernel": _kernel(precision)}


PRECISIONS = (
    entry(
        r"awq-w(?P<bits>\d+)g(?P<group_size>\d+)", quantize_awq, AWQ, AWQ_OPTIONS,
        "awq-w{bits}g{group}",
    ),
)  # fmt: skip
