"""A sweep plan read from YAML (docs/sweep.md): :func:`load_plan`, :func:`plan_from_dict`.

The keys, each checked here (a typo names the closest key; a wrong type or value is a one-line
:class:`MuseQuantError`):

- ``results``: the default results folder; ``corpora``: ``{news|books: folder or hub}``;
  ``precisions``: names, or mappings with ``name``, ``emulated``, ``calibration``,
  ``num_cpus``, ``num_gpus`` and precision options;
- ``options``: ``batch_size`` (a positive integer or ``auto``), ``device``, ``emulated``,
  ``privleak_k``, ``privleak_auc_retrain``, ``bootstrap_iters``, ``log_samples``,
  ``executor`` (``local`` or ``ray``), ``ray_address``, ``threads`` (CPU threads per cell, a
  positive integer; default: the process's own setting);
- ``models``: each with ``label``, ``role``, ``pretrained``, ``adapter``, ``merge``, ``method``,
  ``mode``, ``seed`` or ``seeds``, ``allow_other_base``, ``precisions``, ``corpora``.

Relative paths are relative to the plan file's folder. What the plan means (:class:`Plan`, its
cells) is :mod:`.plan`'s.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import yaml

from harness_ext.errors import MuseQuantError, did_you_mean
from muse_quant.sweep.plan import (
    HUB,
    ModelSpec,
    Plan,
    PrecisionSpec,
    SweepOptions,
    executor_name,
)
from muse_quant.sweep.strict_yaml import load_strict

PLAN_KEYS = ("results", "corpora", "precisions", "options", "models")
MODEL_KEYS = (
    "label",
    "role",
    "pretrained",
    "adapter",
    "merge",
    "method",
    "mode",
    "seed",
    "seeds",
    "allow_other_base",
    "precisions",
    "corpora",
)
#: What ``seeds: [...]`` replaces in a model's label, pretrained and adapter.
SEED_FIELD = "{seed}"
#: Keys of a precision entry written as a mapping; any other key is a precision option.
PRECISION_KEYS = ("name", "emulated", "calibration", "num_cpus", "num_gpus")

def load_plan(path: str | Path) -> Plan:
    """A plan from a YAML file; relative paths in it are relative to the file's folder."""
    path = Path(path)
    where = f"plan {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MuseQuantError(f"{where}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise MuseQuantError(f"{where}: cannot read it ({e})") from None
    try:
        data = load_strict(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise MuseQuantError(f"{where}: not valid YAML ({at}{problem})") from None
    try:
        return plan_from_dict(data, path.resolve().parent)
    except MuseQuantError as e:
        raise MuseQuantError(f"{where}: {e}") from None


def plan_from_dict(data: Any, base: Path) -> Plan:
    """A plan from its YAML structure (a dict); paths relative to ``base``."""
    data = _mapping(data, "the plan", PLAN_KEYS)
    corpora = _mapping(data.get("corpora"), "corpora")
    models = data.get("models")
    if not isinstance(models, list):
        raise MuseQuantError("models: expected a list of models")
    results = _typed(data.get("results"), str, "results")
    return Plan(
        corpora={str(name): _corpus_source(value, name, base) for name, value in corpora.items()},
        models=tuple(
            spec
            for i, entry in enumerate(models)
            for spec in _seed_models(entry, f"models[{i}]", base)
        ),
        precisions=_precisions(data.get("precisions", []), "precisions", base),
        options=_options(data.get("options"), base),
        results=None if results is None else Path(_local(results, base)),
    )


def _corpus_source(value: Any, name: str, base: Path) -> str:
    """``hub``, or a local MUSE-layout folder (made absolute)."""
    value = _typed(value, str, f"corpora.{name}")
    if value is None:
        raise MuseQuantError(f"corpora.{name}: give a MUSE-layout folder or {HUB}")
    return value if value == HUB else _local(value, base)


def _seed_models(data: Any, where: str, base: Path) -> list[ModelSpec]:
    """A model entry, or with ``seeds: [1, 2, 3]`` one model per seed: ``{seed}`` in its label,
    pretrained and adapter is replaced by each seed (a label without it gets ``_s<seed>``), and
    the method defaults to the label without ``{seed}`` (and the separator before it), so the
    seeds make one group on the board."""
    data = _mapping(data, where, MODEL_KEYS)
    if "seeds" not in data:
        return [_model(data, where, base)]
    label = _typed(data.get("label"), str, f"{where}.label") or where
    where = f"model {label!r}"
    seeds = data["seeds"]
    if not (
        isinstance(seeds, list) and seeds
        and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
    ):  # fmt: skip
        raise MuseQuantError(f"{where}: seeds must be a list of integers, e.g. seeds: [1, 2, 3]")
    if len(set(seeds)) < len(seeds):
        raise MuseQuantError(f"{where}: seeds lists a seed twice ({seeds})")
    if "seed" in data:
        raise MuseQuantError(f"{where}: give seed (one run) or seeds (several), not both")
    paths = [k for k in ("pretrained", "adapter") if SEED_FIELD in str(data.get(k) or "")]
    if not paths:
        raise MuseQuantError(
            f"{where}: seeds needs {SEED_FIELD} in pretrained or adapter (each seed's run is its "
            f"own folder), e.g. pretrained: runs/npo_s{SEED_FIELD}"
        )
    method = data.get("method", re.sub(r"[._+-]?\{seed\}", "", label) or label)
    models = []
    for seed in seeds:
        entry = {k: v for k, v in data.items() if k != "seeds"}
        entry |= {k: str(data[k]).replace(SEED_FIELD, str(seed)) for k in paths}
        entry["label"] = (
            label.replace(SEED_FIELD, str(seed)) if SEED_FIELD in label else f"{label}_s{seed}"
        )
        entry |= {"seed": seed, "method": method}
        models.append(_model(entry, f"{where} seed {seed}", base))
    return models


def _model(data: Any, where: str, base: Path) -> ModelSpec:
    data = _mapping(data, where, MODEL_KEYS)
    label = _typed(data.get("label"), str, f"{where}.label")
    if label is None:
        raise MuseQuantError(f"{where}: no label")
    where = f"model {label!r}"
    adapter = _typed(data.get("adapter"), str, f"{where}: adapter")
    pretrained = _typed(data.get("pretrained"), str, f"{where}: pretrained")
    corpora = data.get("corpora")
    if corpora is not None and not (
        isinstance(corpora, list) and all(isinstance(c, str) for c in corpora)
    ):
        raise MuseQuantError(f"{where}: corpora must be a list of corpus names")
    precisions = data.get("precisions")
    if "merge" in data and adapter is None:
        raise MuseQuantError(
            f"{where}: merge says how an adapter is applied, and this model has none; drop it"
        )
    return ModelSpec(
        label=label,
        role=_typed(data.get("role"), str, f"{where}: role") or "",
        pretrained=_local(pretrained, base, must_exist=True) if pretrained else "",
        adapter=_local(adapter, base, must_exist=True) if adapter else None,
        merge=_typed(data.get("merge", True), bool, f"{where}: merge"),
        method=_typed(data.get("method"), str, f"{where}: method"),
        mode=_typed(data.get("mode"), str, f"{where}: mode"),
        seed=_typed(data.get("seed"), int, f"{where}: seed"),
        allow_other_base=_typed(
            data.get("allow_other_base", False), bool, f"{where}: allow_other_base"
        ),
        precisions=None if precisions is None else _precisions(precisions, where, base),
        corpora=None if corpora is None else tuple(corpora),
    )


def _precisions(data: Any, where: str, base: Path) -> tuple[PrecisionSpec, ...]:
    if not isinstance(data, list):
        raise MuseQuantError(f"{where}: precisions must be a list, e.g. [fp32, nf4]")
    specs = []
    for item in data:
        if isinstance(item, str):
            specs.append(PrecisionSpec(item))
            continue
        item = _mapping(item, f"{where}: precision entry")
        name = _typed(item.get("name"), str, f"{where}: precision name")
        if name is None:
            raise MuseQuantError(f"{where}: a precision entry without name: {item}")
        calibration = _typed(item.get("calibration"), str, f"{where}: {name} calibration")
        specs.append(
            PrecisionSpec(
                name=name,
                emulated=_typed(item.get("emulated"), bool, f"{where}: {name} emulated"),
                calibration=None if calibration is None else _local(calibration, base, True),
                options={k: v for k, v in item.items() if k not in PRECISION_KEYS},
                num_cpus=_resource(item.get("num_cpus"), f"{where}: {name} num_cpus"),
                num_gpus=_resource(item.get("num_gpus"), f"{where}: {name} num_gpus"),
            )
        )
    return tuple(specs)


def _options(data: Any, base: Path) -> SweepOptions:
    names = tuple(SweepOptions.__dataclass_fields__)
    data = _mapping(data or {}, "options", names)
    batch_size = data.get("batch_size", SweepOptions.batch_size)
    if isinstance(batch_size, bool) or not (
        (isinstance(batch_size, int) and batch_size > 0)
        or (isinstance(batch_size, str) and batch_size.startswith("auto"))
    ):
        raise MuseQuantError(f"options: batch_size={batch_size!r}: a positive integer or auto")
    auc = data.get("privleak_auc_retrain")
    if auc is not None and (isinstance(auc, bool) or not isinstance(auc, int | float)):
        raise MuseQuantError(f"options: privleak_auc_retrain={auc!r}: a number in (0, 1]")
    return SweepOptions(
        batch_size=batch_size,
        device=_typed(data.get("device"), str, "options: device"),
        emulated=_typed(data.get("emulated", False), bool, "options: emulated"),
        privleak_k=_typed(data.get("privleak_k"), int, "options: privleak_k"),
        privleak_auc_retrain=None if auc is None else float(auc),
        bootstrap_iters=_count(data.get("bootstrap_iters", SweepOptions.bootstrap_iters)),
        log_samples=_typed(data.get("log_samples", False), bool, "options: log_samples"),
        executor=executor_name(data.get("executor", "local")),
        threads=_typed(data.get("threads"), int, "options: threads"),
        ray_address=_typed(data.get("ray_address"), str, "options: ray_address"),
    )


def _count(value: Any) -> int:
    """``bootstrap_iters``: an integer >= 0 (0: no confidence intervals)."""
    value = _typed(value, int, "options: bootstrap_iters")
    if value is None or value < 0:
        raise MuseQuantError(
            f"options: bootstrap_iters={value!r}: an integer >= 0 (0 skips the intervals)"
        )
    return value


def _resource(value: Any, where: str) -> float | None:
    """A Ray resource amount: None, or a finite number >= 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise MuseQuantError(f"{where}: expected a number >= 0, got {value!r}")
    return float(value)


def _mapping(data: Any, where: str, allowed: tuple[str, ...] | None = None) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise MuseQuantError(f"{where}: expected a mapping (key: value), got {_kind(data)}")
    unknown = sorted(str(k) for k in data if allowed is not None and k not in allowed)
    if unknown:
        raise MuseQuantError(
            f"{where}: unknown key(s) {', '.join(unknown)}{did_you_mean(unknown[0], allowed or ())}"
            f"; known: {', '.join(allowed or ())}"
        )
    return data


def _typed(value: Any, kind: type, where: str) -> Any:
    """``value`` if it is None or of ``kind`` (a bool is not an int here; a text is not empty:
    ``results: ''`` would mean the plan's own folder), else an error."""
    if isinstance(value, str) and not value.strip():
        raise MuseQuantError(f"{where}: empty; give a value or leave the key out")
    if value is None or (isinstance(value, kind) and (kind is bool or not isinstance(value, bool))):
        return value
    raise MuseQuantError(f"{where}: expected {kind.__name__}, got {_kind(value)} {value!r}")


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__


def _local(value: str, base: Path, must_exist: bool = False) -> str:
    """A path relative to the plan's folder, made absolute; with ``must_exist``, a value that
    names no such path stays as given (a hub id, or a missing folder the loader reports)."""
    path = (base / Path(value).expanduser()).resolve()
    if must_exist and not path.exists():
        return value
    return str(path)
