"""Shared fixtures: the tiny toy world, built once and cached on disk across test runs.

The cache lives in ``$MUSE_QUANT_CACHE`` if set, else ``<repo>/.cache/muse-quant`` (git-ignored),
keyed by the world's configuration hash, so a second ``make test`` reuses it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_UPDATE_DOWNLOAD_COUNTS", "0")
os.environ.setdefault(
    "MUSE_QUANT_CACHE", str(Path(__file__).resolve().parents[1] / ".cache" / "muse-quant")
)


@pytest.fixture(scope="session")
def tiny_world() -> Path:
    """The tiny toy world's folder (data/, models/{base,target,retrain}, manifest.json)."""
    from harness_ext.toyworld import build_world

    return build_world(scale="tiny")
