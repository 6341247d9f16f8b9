"""Weight-only FP8 (``fp8-e4m3``) through torchao: E4M3 weights, one scale per output channel.

Weight-only FP8 has no FP8 matmul on any device (torch 2.13, torchao 0.18): FP8 tensor cores and
``torch._scaled_mm`` multiply FP8 by FP8, so they need FP8 activations too, which is another
precision (W8A8). torchao's weight-only ``Float8Tensor`` holds the weights in FP8 and dequantizes
them for each matmul, on CPU and CUDA alike; emulated mode does that dequantization once. Both
compute the same numbers; the provenance's ``kernel`` says which ran.
"""

from __future__ import annotations

import torch

from model_wrappers.precisions.base import Built, Family, Precision, Source, entry
from model_wrappers.precisions.emulation import quantized_linear_names
from model_wrappers.precisions.torchao import torchao_dequantize

FP8 = Family("torchao", torchao_dequantize)

KERNELS = {
    False: "torchao Float8Tensor: float8_e4m3fn weights, dequantized to float32 for each matmul",
    True: "emulated: dense float32 weights, the float8_e4m3fn round trip done once",
}


def quantize_fp8(source: Source, precision: Precision) -> Built:
    """FP8 E4M3 weights, scale = absmax / 448 per output channel (torchao
    ``Float8WeightOnlyConfig``, ``PerRow``); activations and matmuls stay float32."""
    # torchao loads its kernels (and warns about the missing ones) on import.
    from torchao.quantization import Float8WeightOnlyConfig, PerRow, quantize_

    model = source.load(dtype=torch.float32)
    # set_inductor_config=False: torchao would otherwise change torch.compile's global settings.
    config = Float8WeightOnlyConfig(
        weight_dtype=torch.float8_e4m3fn, granularity=PerRow(), set_inductor_config=False
    )
    targets = set(quantized_linear_names(model))
    quantize_(model, config, filter_fn=lambda _module, fqn: fqn in targets)
    return model, {
        "config": {
            "class": type(config).__name__,
            "weight_dtype": "float8_e4m3fn",
            "granularity": "PerRow",
            "version": config.version,
        },
        "kernel": KERNELS[precision.emulated],
    }


def fp8_codes(weight: torch.Tensor, precision: Precision | None = None) -> torch.Tensor:
    """The float8_e4m3fn grid point of every element over its output channel's scale (absmax /
    448), as a float so that +0 and -0 are one code (an all-zero row codes to zeros, not NaN)."""
    w = weight.detach().float()
    top = torch.finfo(torch.float8_e4m3fn).max
    scale = w.abs().amax(1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny) / top
    return (w / scale).clamp(-top, top).to(torch.float8_e4m3fn).float().flatten()


PRECISIONS = (entry("fp8-e4m3", quantize_fp8, FP8, bits=8, codes=fp8_codes),)
