"""Installed library versions: what results files, adapters and toy worlds record."""

from __future__ import annotations

import importlib.metadata
import platform
from collections.abc import Sequence

#: Distributions whose versions change what an evaluation computes.
LIBRARIES = (
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "safetensors",
    "bitsandbytes",
    "gptqmodel",
    "optimum",
    "torchao",
    "hqq",
    "gguf",
    "llama_cpp_python",
    "lm_eval",
)


def library_versions(names: Sequence[str] = LIBRARIES) -> dict[str, str | None]:
    """Python's version and each distribution's (``None`` when it is not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions
