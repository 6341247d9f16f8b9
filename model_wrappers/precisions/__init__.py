"""Precisions: the registry, and one module per backend, each registering its own precisions.

Importing this package registers every backend, in this order, which is also the order in which
a name is matched against their patterns (the first match wins) and the order ``known_precisions``
lists them: ``full`` (fp32, bf16, fp16), ``bitsandbytes`` (int8, nf4, fp4), ``gptq``
(gptq-w{bits}g{group}, gptqmodel), ``torchao`` (rtn-w{bits}g{group}), ``fp8`` (fp8-e4m3,
torchao), ``hqq`` (hqq-w{bits}g{group}, hqq), ``gguf`` (gguf-f32, gguf-q8_0 ... gguf-q2_k,
llama.cpp), ``awq`` (awq-w{bits}g{group}, gptqmodel). A backend's library is imported only
when one of its precisions is built. Adding one: docs/architecture.md.
"""

# isort: off
# The dispatch order (each import registers its backend's precisions).
from model_wrappers.precisions import full  # noqa: F401
from model_wrappers.precisions import bitsandbytes  # noqa: F401
from model_wrappers.precisions import gptq  # noqa: F401
from model_wrappers.precisions import torchao  # noqa: F401
from model_wrappers.precisions import fp8  # noqa: F401
from model_wrappers.precisions import hqq  # noqa: F401
from model_wrappers.precisions import gguf  # noqa: F401
from model_wrappers.precisions import awq  # noqa: F401

# isort: on
from model_wrappers.precisions.emulation import quantized_linear_names
from model_wrappers.precisions.registry import (
    Build,
    Built,
    Family,
    Option,
    Precision,
    Source,
    all_precision_options,
    build_precision,
    known_precisions,
    resolve_precision,
)

__all__ = [
    "Build",
    "Built",
    "Family",
    "Option",
    "Precision",
    "Source",
    "all_precision_options",
    "build_precision",
    "known_precisions",
    "quantized_linear_names",
    "resolve_precision",
]
