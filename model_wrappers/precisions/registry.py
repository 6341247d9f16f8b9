"""The precision registry: the backends in dispatch order, resolving a name and its options, and
building the model.

:data:`BACKENDS` is the one list of backends (``precisions/<backend>.py``, each describing its
precisions in ``PRECISIONS``): a name is matched against their patterns in this order (the first
match wins), which is also the order ``known_precisions`` lists them. A backend's library is
imported only when one of its precisions is built. Names are parsed by pattern, so
``gptq-w3g64`` and ``rtn-w8g32`` need no entry of their own. Adding a precision
(docs/architecture.md): its module, with its build function and ``PRECISIONS``, and its place in
:data:`BACKENDS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness_ext.errors import MuseQuantError, did_you_mean
from model_wrappers.calibration import Calibration
from model_wrappers.precisions import awq, bitsandbytes, fp8, full, gguf, gptq, hqq, torchao
from model_wrappers.precisions.base import Built, Entry, Precision, Source
from model_wrappers.precisions.emulation import emulate

#: The dispatch order: full precision (fp32, bf16, fp16), bitsandbytes (int8, nf4, fp4), GPTQ
#: (gptq-w{bits}g{group}, gptqmodel), torchao's round to nearest (rtn-w{bits}g{group}), FP8
#: (fp8-e4m3, torchao), HQQ (hqq-w{bits}g{group}), GGUF (gguf-f32, gguf-q8_0 ... gguf-q2_k,
#: llama.cpp), AWQ (awq-w{bits}g{group}, gptqmodel).
BACKENDS = (full, bitsandbytes, gptq, torchao, fp8, hqq, gguf, awq)

REGISTRY: tuple[Entry, ...] = tuple(e for backend in BACKENDS for e in backend.PRECISIONS)


def known_precisions() -> list[str]:
    return [e.example for e in REGISTRY]


def precision_options_help() -> dict[str, str]:
    """Every precision option and what it means (``muse-quant eval --help``)."""
    return {key: option.help for entry in REGISTRY for key, option in entry.options.items()}


def all_precision_options() -> set[str]:
    """Every option name some precision accepts (model arguments to route to the loader)."""
    return {key for entry in REGISTRY for key in entry.options}


def resolve_precision(
    name: str,
    options: Mapping[str, Any] | None = None,
    emulated: bool = False,
    calibration: Calibration | None = None,
) -> Precision:
    """Parse a precision name and its options (strings from ``--model_args`` accepted)."""
    options = dict(options or {})
    for entry in REGISTRY:
        match = entry.pattern.fullmatch(name)
        if match is None:
            continue
        unknown = sorted(set(options) - set(entry.options))
        if unknown:
            allowed = ", ".join(f"{k} ({o.help})" for k, o in entry.options.items()) or "none"
            raise MuseQuantError(
                f"precision {name}: unknown option(s) {', '.join(unknown)}; its options: {allowed}"
            )
        resolved = {}
        for key, opt in entry.options.items():
            try:
                resolved[key] = opt.parse(options.get(key, opt.default))
            except (TypeError, ValueError) as e:
                raise MuseQuantError(
                    f"precision {name}: option {key}={options[key]}: {e}"
                ) from None
        if emulated and entry.not_emulable:
            raise MuseQuantError(
                f"precision {name}: emulated=true cannot reproduce it ({entry.not_emulable}); "
                "run it with emulated=false"
            )
        family = entry.family
        emulated = bool(emulated and (family.dequantize is not None or family.runtime != "torch"))
        if emulated and resolved.get("compute_dtype", "float32") != "float32":
            raise MuseQuantError(
                f"precision {name}: emulated=true runs dense float32 layers; "
                f"compute_dtype={resolved['compute_dtype']} applies to the real kernels only"
            )
        params = {k: int(v) for k, v in match.groupdict().items()}
        calibration = calibration if entry.family.calibrated else None
        bits = params.get("bits", entry.bits)
        return Precision(
            name, entry.family, params, resolved, entry.build, emulated, calibration, bits,
            entry.codes,
        )  # fmt: skip
    raise MuseQuantError(
        f"unknown precision {name!r}{did_you_mean(name, known_precisions())}; known: "
        f"{', '.join(known_precisions())} "
        "(bits and group size are read from gptq-/rtn-/hqq- names, e.g. gptq-w4g128, rtn-w8g64)"
    )


def build_precision(source: Source, precision: Precision) -> Built:
    """Run the precision's function, then, in emulated mode, dequantize once into dense layers."""
    model, record = precision.build(source, precision)
    if precision.emulated and precision.family.dequantize is not None:
        record = {**record, "emulated_modules": emulate(model, precision.family)}
    return model, record


