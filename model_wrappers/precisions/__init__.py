"""Precisions: the registry, and one module per backend, each describing its own precisions.

The backends and their dispatch order are listed once, in ``registry.BACKENDS``; the types a
backend is made of are in ``base``; emulated mode is in ``emulation``. Adding one:
docs/architecture.md.
"""

from model_wrappers.precisions.base import Build, Built, Family, Option, Precision, Source
from model_wrappers.precisions.emulation import quantized_linear_names
from model_wrappers.precisions.registry import (
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
