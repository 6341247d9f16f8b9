"""Shared fixtures: the micro toy world, built once and cached on disk across test runs.

The cache lives in ``$MUSE_QUANT_CACHE`` if set, else ``<repo>/.cache/muse-quant`` (git-ignored),
keyed by the world's configuration hash, so a second ``make test`` reuses it. Several pytest
workers (``make test`` runs one per core) share it: the first to need the world builds it under a
file lock while the others wait.

The thread policy: every test process runs torch on one thread (below), and ``make test`` sets
``OMP_NUM_THREADS=1`` for every process a test starts; a test that starts processes of its own
starts at most ``muse_run.cores_for_this_worker()`` of them.
"""

from __future__ import annotations

import json
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

#: Test files that take minutes (measured with ``--durations``): run first, so that with one
#: worker per core the long ones overlap each other instead of ending the run alone.
SLOWEST_FIRST = (
    "test_zoo.py",
    "test_sweep.py",
    "test_demo.py",
    "test_real_model.py",
    "test_real_precisions.py",
    "test_gguf.py",
    "test_awq.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session")
def micro_world() -> Path:
    """The micro toy world's folder (data/, models/{base,target,retrain}, manifest.json): the
    toy world's own code at the test suite's scale (docs/toyworld.md)."""
    from muse_quant.toyworld.build import build_world

    return build_world(scale="micro")


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """One torch thread for the whole run: the toy models' matmuls are tiny, and on a shared
    2-core machine two OpenMP threads slow down ~100x whenever another process holds a core."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def target(micro_world: Path) -> Path:
    """The micro world's target model folder."""
    return micro_world / "models" / "target"


@pytest.fixture(scope="session")
def smollm2() -> str:
    """The real pretrained model's GGUF file (SmolLM2-135M; ``make test`` fetches it first)."""
    from muse_quant.toyworld.bases import fetch_base

    return str(fetch_base("smollm2-135m"))


@pytest.fixture(scope="session")
def two_of_each(micro_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The micro world's MUSE data, the first two records of every split (about a minute of
    SmolLM2 on one thread per evaluator)."""
    data = tmp_path_factory.mktemp("muse-two") / "data"
    for split in (micro_world / "data").glob("*/*.json"):
        target = data / split.parent.name / split.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(json.loads(split.read_text())[:2]))
    return data
