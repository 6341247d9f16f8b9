"""Shared fixtures: the tiny toy world, built once and cached on disk across test runs.

The cache lives in ``$MUSE_QUANT_CACHE`` if set, else ``<repo>/.cache/muse-quant`` (git-ignored),
keyed by the world's configuration hash, so a second ``make test`` reuses it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_UPDATE_DOWNLOAD_COUNTS", "0")
os.environ.setdefault(
    "MUSE_QUANT_CACHE", str(Path(__file__).resolve().parents[1] / ".cache" / "muse-quant")
)


@pytest.fixture(scope="session")
def tiny_world() -> Path:
    """The tiny toy world's folder (data/, models/{base,target,retrain}, manifest.json)."""
    from muse_quant.toyworld.build import build_world

    return build_world(scale="tiny")


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """One torch thread for the whole run: the toy models' matmuls are tiny, and on a shared
    2-core machine two OpenMP threads slow down ~100x whenever another process holds a core."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def target(tiny_world: Path) -> Path:
    """The tiny world's target model folder."""
    return tiny_world / "models" / "target"
