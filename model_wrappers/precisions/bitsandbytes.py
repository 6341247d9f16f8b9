"""bitsandbytes: LLM.int8 (``int8``) and the 4-bit NormalFloat and float types (``nf4``, ``fp4``).

Its workarounds live here: a log filter for LLM.int8's per-matmul CPU warning, and the choice of
CPU kernel for 4-bit matmuls.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from transformers import BitsAndBytesConfig

from model_wrappers.precisions.base import (
    COMPUTE_DTYPE,
    Built,
    Family,
    Option,
    Precision,
    Source,
    entry,
    non_negative,
    parse_bool,
)


class _DropInt8CastWarning(logging.Filter):
    """bitsandbytes' LLM.int8 logs one warning per matmul on CPU that it casts inputs to fp16."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("MatMul8bitLt: inputs will be cast")


logging.getLogger("bitsandbytes.autograd._functions").addFilter(_DropInt8CastWarning())


def _bnb_dequantize(module: nn.Module) -> torch.Tensor | None:
    import bitsandbytes as bnb  # loaded when a bitsandbytes precision is built

    if isinstance(module, bnb.nn.Linear4bit):
        return bnb.functional.dequantize_4bit(module.weight.data, module.weight.quant_state)
    return None


BITSANDBYTES = Family("bitsandbytes", _bnb_dequantize)
BNB4_OPTIONS = {
    "double_quant": Option(False, parse_bool, "quantize the absmax scales too (QLoRA's trick)"),
    "compute_dtype": COMPUTE_DTYPE,
}
INT8_OPTIONS = {
    "threshold": Option(
        6.0, non_negative, "LLM.int8 outlier threshold; 0 disables the fp16 outliers"
    ),
}


def _bitsandbytes(source: Source, config: Any) -> Built:
    model = source.load(dtype=torch.float32, quantization_config=config)
    return model, {"quantization_config": model.config.quantization_config.to_dict()}


def quantize_int8(source: Source, precision: Precision) -> Built:
    """LLM.int8 (bitsandbytes): int8 row-wise weights, activations quantized per matmul."""
    threshold = precision.options["threshold"]
    return _bitsandbytes(
        source, BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=threshold)
    )


def _bnb_4bit(source: Source, precision: Precision, quant_type: str) -> Built:
    compute = precision.compute_dtype
    config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant_type,
        bnb_4bit_use_double_quant=precision.options["double_quant"],
        bnb_4bit_compute_dtype=compute,
    )
    model, record = _bitsandbytes(source, config)
    # On CPUs with AVX512-BF16, bitsandbytes runs 4-bit matmuls in a fused kernel that casts
    # activations and scales to bf16 whatever compute_dtype says; keep that kernel only when
    # bf16 is what was asked, else its default kernel (dequantize, matmul in compute_dtype).
    fused = [m for m in model.modules() if getattr(m, "support_avx512bf16_for_cpu", False)]
    if fused and compute != torch.bfloat16:
        for module in fused:
            module.support_avx512bf16_for_cpu = False
    if torch.device(source.device).type == "cpu":
        fused_kept = bool(fused) and compute == torch.bfloat16
        record["cpu_kernel"] = "fused AVX512-BF16" if fused_kept else f"default ({compute})"
    return model, record


def quantize_nf4(source: Source, precision: Precision) -> Built:
    """NormalFloat-4 (bitsandbytes, QLoRA): 16 levels at normal quantiles, absmax per 64."""
    return _bnb_4bit(source, precision, "nf4")


def quantize_fp4(source: Source, precision: Precision) -> Built:
    """FP4 (bitsandbytes' 4-bit float, the ICLR'25 code's "4-bit"), absmax per 64."""
    return _bnb_4bit(source, precision, "fp4")


def nf4_codes(weight: torch.Tensor, precision: Precision | None = None) -> torch.Tensor:
    """bitsandbytes' NF4 code (0..15) of every element, in flattened order (blockwise absmax,
    block 64, as ``nf4`` loads)."""
    import bitsandbytes.functional as bnbf  # loaded when codes are counted

    packed, _ = bnbf.quantize_4bit(
        weight.detach().float().contiguous(), blocksize=64, quant_type="nf4"
    )
    packed = packed.flatten()
    return torch.stack([packed >> 4, packed & 15], dim=-1).flatten()[: weight.numel()]


PRECISIONS = (
    entry(
        "int8",
        quantize_int8,
        BITSANDBYTES,
        INT8_OPTIONS,
        not_emulable="LLM.int8 also quantizes the activations of every matmul, which dense "
        "weights do not; on the toy world KnowMem moved by 5 points",
        bits=8,
    ),
    entry("nf4", quantize_nf4, BITSANDBYTES, BNB4_OPTIONS, bits=4, codes=nf4_codes),
    entry("fp4", quantize_fp4, BITSANDBYTES, BNB4_OPTIONS, bits=4),
)
