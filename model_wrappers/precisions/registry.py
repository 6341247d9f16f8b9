"""The precision registry: resolving a name and its options, and building the model.

A backend module (``full``, ``bitsandbytes``, ``gptq``, ``torchao``, ``fp8``, ``hqq``) gives
one function per precision and registers it with one call. A precision function receives a
:class:`Source` (full-precision weights: a checkpoint folder, or a base with a LoRA adapter
merged in float32) and the resolved :class:`Precision`, and returns the model ready for
evaluation plus a JSON-able description of what the library did. Names are parsed by
pattern, so ``gptq-w3g64`` and ``rtn-w8g32`` need no entry of their own.

Adding a precision (docs/architecture.md): a module such as ``precisions/hqq.py``, which has::

    def quantize_hqq(source: Source, precision: Precision) -> Built:
        ...                                    # load, quantize, return (model, library record)

    register(r"hqq-w(?P<bits>\\d+)g(?P<group_size>\\d+)", quantize_hqq, HQQ, HQQ_OPTIONS)

and its import in ``precisions/__init__.py``, whose import order is the dispatch order.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from harness_ext.errors import MuseQuantError
from model_wrappers.calibration import Calibration
from model_wrappers.precisions.emulation import emulate


class Source(Protocol):
    """Full-precision weights a precision function starts from (built by ``loading.py``)."""

    #: sha256 identifying the full-precision weights (and a merged adapter): the cache key.
    digest: str
    #: The checkpoint folder: its config and tokenizer (its weights are the base's when an
    #: adapter is merged; ``load`` and ``weights_folder`` give the merged ones).
    folder: Path
    device: str
    trust_remote_code: bool

    def load(self, **from_pretrained: Any) -> Any:
        """The model through ``from_pretrained`` with these extra arguments (dtype, quantization
        config), placed on ``device``."""

    def weights_folder(self) -> contextlib.AbstractContextManager[str]:
        """A folder holding the weights (merged ones written out), for libraries that read
        files themselves."""


@dataclass(frozen=True)
class Family:
    """A quantization library and, for emulated mode, how it dequantizes one of its modules
    (``None`` for a module it did not quantize); ``calibrated`` libraries need calibration text.

    ``runtime`` is what runs its real kernels: ``torch`` modules, or a runtime of its own that
    evaluates the library's files (``llama.cpp``). A library with its own runtime builds a torch
    model only for emulated mode, dequantizing its file itself (``dequantize`` stays None).
    """

    name: str
    dequantize: Callable[[nn.Module], torch.Tensor | None] | None = None
    calibrated: bool = False
    runtime: str = "torch"


@dataclass(frozen=True)
class Option:
    default: Any
    parse: Callable[[Any], Any]
    help: str


@dataclass(frozen=True)
class Precision:
    """A resolved precision: name, library, the parameters read from the name, all options, and
    the function that builds it. Resolved once and passed down: a sweep cell's key, the loader
    and the provenance a results file records all read this one object."""

    name: str
    family: Family
    params: dict[str, int]
    options: dict[str, Any]
    build: Build = field(compare=False, repr=False)
    emulated: bool = False
    calibration: Calibration | None = None

    @property
    def runtime(self) -> str:
        """What evaluates this precision: torch (emulated mode always), or the library's own."""
        return "torch" if self.emulated else self.family.runtime

    @property
    def compute_dtype(self) -> torch.dtype:
        return getattr(torch, self.options["compute_dtype"])

    def describe(self) -> dict[str, Any]:
        """JSON-able: what a results file records about the precision."""
        return {
            "name": self.name,
            "library": self.family.name,
            "params": dict(self.params),
            "options": dict(self.options),
            "emulated": self.emulated,
            "calibration": self.calibration.describe() if self.calibration else None,
        }


#: What a precision function returns: the model, and what the library did (JSON-able).
Built = tuple[Any, dict[str, Any]]
Build = Callable[[Source, Precision], Built]


@dataclass(frozen=True)
class Entry:
    pattern: re.Pattern[str]
    build: Build
    family: Family
    options: Mapping[str, Option] = field(default_factory=dict)
    example: str = ""
    #: Why emulated mode cannot reproduce this precision (``None``: it can).
    not_emulable: str | None = None


REGISTRY: list[Entry] = []


def register(
    pattern: str,
    build: Build,
    family: Family,
    options: Mapping[str, Option] | None = None,
    example: str | None = None,
    not_emulable: str | None = None,
) -> None:
    """Add a precision: ``pattern`` is a name or a regex whose named groups are int parameters."""
    entry = Entry(
        re.compile(pattern), build, family, dict(options or {}), example or pattern, not_emulable
    )
    REGISTRY.append(entry)


def known_precisions() -> list[str]:
    return [e.example for e in REGISTRY]


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
        return Precision(name, entry.family, params, resolved, entry.build, emulated, calibration)
    raise MuseQuantError(
        f"unknown precision {name!r}; known: {', '.join(known_precisions())} "
        "(bits and group size are read from gptq-/rtn-/hqq- names, e.g. gptq-w4g128, rtn-w8g64)"
    )


def build_precision(source: Source, precision: Precision) -> Built:
    """Run the precision's function, then, in emulated mode, dequantize once into dense layers."""
    model, record = precision.build(source, precision)
    if precision.emulated and precision.family.dequantize is not None:
        record = {**record, "emulated_modules": emulate(model, precision.family)}
    return model, record


# --------------------------------------------------------------------------- option parsers


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ValueError("expected true or false")


_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
}


def parse_dtype(value: Any) -> str:
    """A floating dtype's torch name (``bf16`` -> ``bfloat16``)."""
    text = str(value).removeprefix("torch.").strip().lower()
    if text not in _DTYPES:
        raise ValueError(f"expected one of {', '.join(sorted(set(_DTYPES.values())))}")
    return _DTYPES[text]


def positive_int(value: Any) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError("expected a positive integer")
    return number


COMPUTE_DTYPE = Option("float32", parse_dtype, "dtype of activations and matmuls")

