"""Full precision: the checkpoint loaded in a floating dtype, nothing quantized (torch).

One precision per entry of :data:`harness_ext.precision_names.FULL_PRECISIONS`.
"""

from __future__ import annotations

import torch

from harness_ext.precision_names import FULL_PRECISIONS
from model_wrappers.precisions.base import Built, Family, Precision, Source, entry

FULL = Family("torch")


def load_full(source: Source, precision: Precision) -> Built:
    dtype = FULL_PRECISIONS[precision.quantization]
    return source.load(dtype=getattr(torch, dtype)), {"dtype": dtype}


PRECISIONS = tuple(
    entry(name, load_full, FULL, bits=torch.finfo(getattr(torch, dtype)).bits)
    for name, dtype in FULL_PRECISIONS.items()
)
