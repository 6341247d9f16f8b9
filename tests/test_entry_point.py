"""The ``muse`` model under lm-eval's plugin group for models, so that plain ``lm_eval --model
muse`` finds it where lm-eval reads the group (EleutherAI/lm-evaluation-harness#4013, merged
after 0.4.13). lm-eval 0.4.13 itself does not read it; the test checks what that loader would
find and load: the very class lm-eval's registry holds for ``muse``.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest
from lm_eval.api.model import LM
from lm_eval.api.registry import Registry, get_model

import model_wrappers.muse_model

#: lm-eval's entry-point group for models (its ``load_plugins("lm_eval.models", ...)``).
GROUP = "lm_eval.models"
STALE = (
    "the installed metadata predates pyproject.toml's entry points: run `make` "
    "(or `pip install --no-deps --no-build-isolation -e .`)"
)


def muse_entry_point() -> importlib.metadata.EntryPoint:
    points = importlib.metadata.entry_points(group=GROUP).select(name="muse")
    assert len(points) == 1, STALE
    (point,) = points
    return point


def test_the_muse_entry_point_loads_the_class_lm_eval_registers_for_muse() -> None:
    point = muse_entry_point()
    assert point.dist is not None and point.dist.metadata["Name"] == "muse-quant"
    assert point.load() is get_model("muse") is model_wrappers.muse_model.MuseModel


def test_a_registry_given_the_entry_point_materialises_the_muse_model() -> None:
    """What lm-eval's plugin loader does with it: the entry point as a lazy placeholder."""
    registry: Registry[type[LM]] = Registry("model", base_cls=LM)
    registry.register("muse", target=muse_entry_point())
    assert registry.get("muse") is model_wrappers.muse_model.MuseModel


def test_pyproject_declares_what_is_installed() -> None:
    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11+")
    pyproject = Path(__file__).parent.parent / "pyproject.toml"
    declared = tomllib.loads(pyproject.read_text())["project"]["entry-points"][GROUP]
    assert declared == {"muse": muse_entry_point().value}
