"""What every precision backend shares: the types a precision is made of, and option parsers.

A backend module (``precisions/<backend>.py``) describes its library with a :class:`Family`, gives
one function per precision (a :data:`Build`: from a :class:`Source` and the resolved
:class:`Precision`, the model ready for evaluation and what the library did) and lists its
precisions as :class:`Entry` values in ``PRECISIONS``; ``registry.py`` lists the backends in
dispatch order.
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

from harness_ext.precision_names import SHIPPED_GGUF, split_deployment
from model_wrappers.calibration import Calibration


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
    #: The module its precisions need that an optional extra installs (None: always installed).
    requires: str | None = None


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
    #: Weight bits (of most block weights for a llama.cpp mix such as q4_k_m).
    bits: int | None = None
    codes: Codes | None = field(default=None, compare=False, repr=False)
    #: What a deployment does to the float32 weights before they are quantized, in order
    #: (pruning, relearning): the steps a name such as ``wanda-50+nf4`` puts before its precision.
    deployments: tuple[Deployment, ...] = ()

    @property
    def quantization(self) -> str:
        """The name without its deployment steps: what the backend builds (``nf4`` of
        ``wanda-50+nf4``, ``fp32`` of ``wanda-50``)."""
        return split_deployment(self.name)[1]

    @property
    def shipped(self) -> bool:
        """Whether it evaluates a GGUF checkpoint's own file as shipped (``gguf-shipped``)
        rather than building from full-precision weights."""
        return self.quantization == SHIPPED_GGUF

    @property
    def calibrated(self) -> bool:
        """Whether building it needs calibration texts (GPTQ, AWQ, Wanda)."""
        return self.family.calibrated or any(step.calibrated for step in self.deployments)

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
        } | ({"deployments": [d.describe() for d in self.deployments]} if self.deployments else {})


@dataclass(frozen=True)
class StepContext:
    """What a deployment step may read besides the model: the checkpoint folder (config and
    tokenizer, and where a toy world keeps its data), the weights' identity before this step
    (a cache key), and the precision's calibration texts."""

    folder: Path
    digest: str
    calibration: Calibration | None
    device: str


@dataclass(frozen=True)
class Deployment:
    """A resolved deployment step (``wanda-50``, ``relearn-forget-k10``): it changes a float32
    model in place and says what it did (JSON-able)."""

    name: str
    kind: str
    #: From the name: numbers as ints (``sparsity``, ``steps``), words as strings (``kind``).
    params: dict[str, Any]
    options: dict[str, Any]
    apply: Callable[[nn.Module, Deployment, StepContext], dict[str, Any]] = field(
        compare=False, repr=False
    )
    calibrated: bool = False
    #: Checks, before any weight is read, that the step can run on the checkpoint in this
    #: folder (relearning's data and slice); raises a one-line error.
    check_folder: Callable[[Deployment, Path], None] | None = field(
        default=None, compare=False, repr=False
    )

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "params": dict(self.params),
                "options": dict(self.options)}  # fmt: skip


@dataclass(frozen=True)
class StepEntry:
    """A deployment step's names (a regex whose named groups are int parameters), its function
    and options; listed in a step module's ``STEPS``."""

    pattern: re.Pattern[str]
    apply: Callable[[nn.Module, Deployment, StepContext], dict[str, Any]]
    kind: str
    options: Mapping[str, Option] = field(default_factory=dict)
    example: str = ""
    calibrated: bool = False
    #: What is wrong with the parameters a name gives (``3of2``), or None.
    check: Callable[[dict[str, Any]], str | None] | None = None
    check_folder: Callable[[Deployment, Path], None] | None = None

    @classmethod
    def of(
        cls,
        pattern: str,
        apply: Callable[[nn.Module, Deployment, StepContext], dict[str, Any]],
        kind: str,
        options: Mapping[str, Option] | None = None,
        example: str = "",
        calibrated: bool = False,
        check: Callable[[dict[str, Any]], str | None] | None = None,
        check_folder: Callable[[Deployment, Path], None] | None = None,
    ) -> StepEntry:
        """A step: ``pattern`` is a regex whose named groups are its parameters (numbers become
        ints)."""
        return cls(re.compile(pattern), apply, kind, dict(options or {}), example or pattern,
                   calibrated, check, check_folder)  # fmt: skip


#: What a precision function returns: the model, and what the library did (JSON-able).
Built = tuple[Any, dict[str, Any]]
Build = Callable[[Source, Precision], Built]
#: A weight's codes under a precision: (weight, resolved precision) -> one code per element.
Codes = Callable[[torch.Tensor, "Precision"], torch.Tensor]


@dataclass(frozen=True)
class Entry:
    pattern: re.Pattern[str]
    build: Build
    family: Family
    options: Mapping[str, Option] = field(default_factory=dict)
    example: str = ""
    #: Why emulated mode cannot reproduce this precision (``None``: it can).
    not_emulable: str | None = None
    #: The weight bits of a precision, from the parameters its name gives (``bits``, if any).
    bits: int | None = None
    #: The library's quantization code of every element of a weight (flattened order), for
    #: counting the codes an update changed (``model_wrappers.codes``); None: not counted.
    codes: Codes | None = None


def entry(
    pattern: str,
    build: Build,
    family: Family,
    options: Mapping[str, Option] | None = None,
    example: str | None = None,
    not_emulable: str | None = None,
    bits: int | None = None,
    codes: Codes | None = None,
) -> Entry:
    """A precision: ``pattern`` is a name or a regex whose named groups are int parameters;
    ``bits`` is its weight width unless the name gives one (a ``bits`` group)."""
    return Entry(
        re.compile(pattern), build, family, dict(options or {}), example or pattern, not_emulable,
        bits, codes,
    )  # fmt: skip


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


def open_fraction(value: Any) -> float:
    """A number strictly between 0 and 1 (a dampening, a share)."""
    number = float(value)
    if not 0.0 < number < 1.0:
        raise ValueError("expected a number between 0 and 1")
    return number


def non_negative(value: Any) -> float:
    """A finite number of at least 0 (a threshold)."""
    number = float(value)
    if not 0.0 <= number < float("inf"):
        raise ValueError("expected a finite number of at least 0")
    return number


def positive_float(value: Any) -> float:
    """A finite number above 0 (a learning rate)."""
    number = float(value)
    if not 0.0 < number < float("inf"):
        raise ValueError("expected a positive number")
    return number


def positive_int(value: Any) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError("expected a positive integer")
    return number


COMPUTE_DTYPE = Option("float32", parse_dtype, "dtype of activations and matmuls")
