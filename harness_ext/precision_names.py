"""Precision names as results files write them: which are full precision, how they sort.

The one definition of "full precision": the loader registers these names, the board and the
audit measure retention against them. Names only (``fp32``, ``nf4``, ``gptq-w4g128``): nothing
here loads a precision, so a board can read them without the precision registry.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

#: The unquantized precisions and the torch dtype each loads in.
FULL_PRECISIONS = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}

#: The full precisions retention is measured against, preferred first (docs/leaderboard.md);
#: fp16's narrow range makes it a deployment precision to test, not a reference.
REFERENCE_PRECISIONS = ("fp32", "bf16")

#: torch dtype name -> precision name.
DTYPE_PRECISIONS = {dtype: name for name, dtype in FULL_PRECISIONS.items()}

#: The kinds of deployment step a name may put before its precision, joined by ``+``:
#: ``wanda-50+nf4`` is Wanda pruning to 50% then NF4; ``relearn-forget-k10`` alone is relearning
#: at fp32 (``model_wrappers/precisions/pruning.py`` and ``relearning.py`` define the steps).
DEPLOYMENT_KINDS = ("magnitude", "wanda", "relearn")
DEPLOYMENT_SEPARATOR = "+"


def split_deployment(name: str) -> tuple[tuple[str, ...], str]:
    """A name's deployment steps, in the order they apply, and the precision they end in
    (``wanda-50+nf4`` -> (("wanda-50",), "nf4"); ``wanda-50`` -> (("wanda-50",), "fp32"))."""
    parts = tuple(name.split(DEPLOYMENT_SEPARATOR))
    if parts[-1].split("-")[0] in DEPLOYMENT_KINDS:
        return parts, "fp32"
    return parts[:-1], parts[-1]


_GROUPED_BITS = re.compile(r"w(\d+)g\d+")
#: A float format named by width, then its layout: ``fp8-e4m3`` is 8 bits, not 3.
_FLOAT_BITS = re.compile(r"^fp(\d+)-")
#: llama.cpp's type names: ``gguf-q4_k_m`` and ``gguf-q4_0`` are 4-bit, ``gguf-f32`` 32-bit.
_GGUF_BITS = re.compile(r"^gguf-[qf](\d+)")
_TRAILING_BITS = re.compile(r"(\d+)$")

#: The precision that evaluates a GGUF checkpoint's own file, as shipped, on llama.cpp. Its name
#: says no bits (each model's file has its own type): it sorts after every precision whose name
#: does, and the board marks the model's rows with the file's type (docs/leaderboard.md).
SHIPPED_GGUF = "gguf-shipped"
#: A GGUF file's ``general.file_type`` as the gguf package names it (``MOSTLY_Q4_K_M``,
#: ``ALL_F32``, ``MOSTLY_BF16``, ``MOSTLY_IQ2_XXS``): the bits of most of its weights.
_FILE_TYPE_BITS = re.compile(r"^(?:ALL|MOSTLY)_(?:B?F|I?Q|TQ)(\d+)")


def bits_of(precision: str, file_type: str | None = None) -> int | None:
    """Weight bits a precision name says (``gptq-w4g128`` -> 4, ``int8`` -> 8, ``fp8-e4m3`` ->
    8, ``gguf-q4_k_m`` -> 4; a deployment's, its precision's: ``wanda-50`` -> 32); for a name
    that says none (``gguf-shipped``), those of the GGUF ``file_type`` given; else None."""
    precision = split_deployment(precision)[1]
    match = (
        _GROUPED_BITS.search(precision)
        or _FLOAT_BITS.search(precision)
        or _GGUF_BITS.search(precision)
        or _TRAILING_BITS.search(precision)
    )
    if match is None and file_type is not None:
        return gguf_file_type_bits(file_type)
    return int(match.group(1)) if match else None


def gguf_file_type_bits(file_type: str) -> int | None:
    """The bits of most weights of a GGUF file of this ``general.file_type`` (``MOSTLY_Q8_0``
    -> 8, ``ALL_F32`` -> 32), None for a name it cannot read."""
    match = _FILE_TYPE_BITS.match(file_type)
    return int(match.group(1)) if match else None


def precision_order(precision: str) -> tuple[int, str]:
    """Sort key: most bits first (so full precision leads and 4-bit ones come last), then name."""
    bits = bits_of(precision)
    return (-(bits if bits is not None else 0), precision)


def is_four_bit(precision: str) -> bool:
    """Whether the plots' "at 4-bit" view includes this precision."""
    return bits_of(precision) == 4


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes")


def precision_from_model_args(model_args: Mapping[str, Any], model_dtype: Any) -> str | None:
    """The precision of a foreign results file, from what lm-eval recorded of the model.

    In order: a ``precision`` model argument; bitsandbytes flags (``load_in_4bit`` with
    ``bnb_4bit_quant_type``, default fp4 as in transformers; ``load_in_8bit`` -> int8); a
    ``dtype``/``torch_dtype`` argument; lm-eval's ``config.model_dtype``. None when none says.
    """
    if model_args.get("precision"):
        return str(model_args["precision"])
    if _truthy(model_args.get("load_in_4bit")):
        return str(model_args.get("bnb_4bit_quant_type") or "fp4")
    if _truthy(model_args.get("load_in_8bit")):
        return "int8"
    for dtype in (model_args.get("dtype"), model_args.get("torch_dtype"), model_dtype):
        name = str(dtype).removeprefix("torch.")
        if dtype is not None and name in DTYPE_PRECISIONS:
            return DTYPE_PRECISIONS[name]
    return None
