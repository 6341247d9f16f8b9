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
from harness_ext.precision_names import SHIPPED_GGUF, split_deployment
from model_wrappers.calibration import Calibration
from model_wrappers.precisions import (
    awq,
    bitsandbytes,
    fp8,
    full,
    gguf,
    gptq,
    hqq,
    pruning,
    relearning,
    torchao,
)
from model_wrappers.precisions.base import (
    Built,
    Deployment,
    Entry,
    Option,
    Precision,
    Source,
    StepEntry,
)
from model_wrappers.precisions.deployed import DeployedSource
from model_wrappers.precisions.emulation import emulate

#: The dispatch order: full precision (fp32, bf16, fp16), bitsandbytes (int8, nf4, fp4), GPTQ
#: (gptq-w{bits}g{group}, gptqmodel), torchao's round to nearest (rtn-w{bits}g{group}), FP8
#: (fp8-e4m3, torchao), HQQ (hqq-w{bits}g{group}), GGUF (gguf-f32, gguf-q8_0 ... gguf-q2_k,
#: llama.cpp, and gguf-shipped: a GGUF checkpoint's own file), AWQ (awq-w{bits}g{group},
#: gptqmodel).
BACKENDS = (full, bitsandbytes, gptq, torchao, fp8, hqq, gguf, awq)

REGISTRY: tuple[Entry, ...] = tuple(e for backend in BACKENDS for e in backend.PRECISIONS)

#: The deployment steps a name may put before its precision, joined by ``+`` (``wanda-50+nf4``),
#: matched in this order: pruning (magnitude-{sparsity}, magnitude-{n}of{m}, wanda-{sparsity},
#: wanda-{n}of{m}), relearning (relearn-{forget,retain}-k{steps}).
DEPLOYMENT_STEPS = (pruning, relearning)

STEP_REGISTRY: tuple[StepEntry, ...] = tuple(e for module in DEPLOYMENT_STEPS for e in module.STEPS)


def known_precisions() -> list[str]:
    """An example name of every precision, then of every deployment step."""
    return [e.example for e in REGISTRY] + [e.example for e in STEP_REGISTRY]


def _declared() -> list[Mapping[str, Option]]:
    return [e.options for e in REGISTRY] + [e.options for e in STEP_REGISTRY]


def precision_options_help() -> dict[str, str]:
    """Every precision and deployment option and what it means (``muse-quant eval --help``)."""
    return {key: option.help for options in _declared() for key, option in options.items()}


def all_precision_options() -> set[str]:
    """Every option name some precision or deployment step accepts (model arguments to route to
    the loader)."""
    return {key for options in _declared() for key in options}


def _parsed(name: str, declared: Mapping[str, Option], given: Mapping[str, Any]) -> dict[str, Any]:
    """Every option ``declared`` takes, parsed from ``given`` or its default."""
    resolved = {}
    for key, opt in declared.items():
        try:
            resolved[key] = opt.parse(given.get(key, opt.default))
        except (TypeError, ValueError) as e:
            raise MuseQuantError(f"precision {name}: option {key}={given[key]}: {e}") from None
    return resolved


def _step(name: str, step: str, options: Mapping[str, Any]) -> tuple[Deployment, StepEntry]:
    """A deployment step resolved, with the entry it matched (whose options it declares)."""
    for entry in STEP_REGISTRY:
        match = entry.pattern.fullmatch(step)
        if match is not None:
            params = {k: int(v) if v.isdigit() else v for k, v in match.groupdict().items()}
            problem = entry.check(params) if entry.check else None
            if problem:
                raise MuseQuantError(f"precision {name}: deployment step {step}: {problem}")
            deployment = Deployment(
                step, entry.kind, params, _parsed(name, entry.options, options), entry.apply,
                entry.calibrated, entry.check_folder,
            )  # fmt: skip
            return deployment, entry
    steps = [e.example for e in STEP_REGISTRY]
    raise MuseQuantError(
        f"precision {name}: unknown deployment step {step!r}{did_you_mean(step, steps)}; known: "
        f"{', '.join(steps)} (sparsity in percent, or NofM: keep N weights of every M)"
    )


def resolve_precision(
    name: str,
    options: Mapping[str, Any] | None = None,
    emulated: bool = False,
    calibration: Calibration | None = None,
) -> Precision:
    """Parse a precision name (with any deployment steps before it, ``wanda-50+nf4``) and its
    options (strings from ``--model_args`` accepted)."""
    options = dict(options or {})
    step_names, quantization = split_deployment(name)
    if step_names and quantization == SHIPPED_GGUF:
        raise MuseQuantError(
            f"precision {name}: {SHIPPED_GGUF} evaluates the GGUF file as shipped, and deployment "
            f"steps change weights; put them before a precision built from the dequantized file "
            f"({step_names[0]}+gguf-q8_0, {step_names[0]}+nf4)"
        )
    matched = [_step(name, step, options) for step in step_names]
    steps = tuple(deployment for deployment, _ in matched)
    step_options = {key: opt for _, entry in matched for key, opt in entry.options.items()}
    for entry in REGISTRY:
        match = entry.pattern.fullmatch(quantization)
        if match is None:
            continue
        unknown = sorted(set(options) - set(entry.options) - set(step_options))
        if unknown:
            declared = {**entry.options, **step_options}
            allowed = ", ".join(f"{k} ({o.help})" for k, o in declared.items()) or "none"
            raise MuseQuantError(
                f"precision {name}: unknown option(s) {', '.join(unknown)}; its options: {allowed}"
            )
        resolved = _parsed(name, entry.options, options)
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
        calibrated = entry.family.calibrated or any(step.calibrated for step in steps)
        bits = params.get("bits", entry.bits)
        return Precision(
            name, entry.family, params, resolved, entry.build, emulated,
            calibration if calibrated else None, bits, entry.codes, steps,
        )  # fmt: skip
    raise MuseQuantError(
        f"unknown precision {quantization!r}{did_you_mean(quantization, known_precisions())}; "
        f"known: {', '.join(known_precisions())} "
        "(bits and group size are read from gptq-/rtn-/hqq- names, e.g. gptq-w4g128, rtn-w8g64; "
        "a deployment step goes before its precision with +, e.g. wanda-50+nf4)"
    )


def build_precision(source: Source, precision: Precision) -> Built:
    """Run the precision's function, then, in emulated mode, dequantize once into dense layers.
    With deployment steps, ``source`` is their :class:`DeployedSource` (``read_request``)."""
    assert not precision.deployments or isinstance(source, DeployedSource)
    model, record = precision.build(source, precision)
    if precision.emulated and precision.family.dequantize is not None:
        record = {**record, "emulated_modules": emulate(model, precision.family)}
    return model, record
