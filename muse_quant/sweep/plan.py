"""A sweep plan: which models, at which precisions, on which corpora (docs/sweep.md).

A plan is YAML (:func:`load_plan`) or built in code (:class:`Plan`); either way
:meth:`Plan.cells` checks it and lists its cells (model x corpus x precision) in the order that
loads each checkpoint once. Every mistake is a one-line :class:`MuseQuantError`, raised before
any model loads.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import yaml

from harness_ext.errors import MuseQuantError, did_you_mean
from harness_ext.muse_data import CORPORA
from harness_ext.results_layout import LOCKS
from model_wrappers.loading import check_device
from model_wrappers.precisions import Precision, resolve_precision

ROLES = ("target", "retrain", "method")
#: A corpus value that reads MUSE's pinned hub dataset instead of a local folder.
HUB = "hub"
#: Labels become folder names.
LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
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
EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class PrecisionSpec:
    """One precision to evaluate at, with its options (docs/precisions.md)."""

    name: str
    #: None: the plan's ``options.emulated``.
    emulated: bool | None = None
    #: GPTQ calibration texts: a MUSE data folder, a JSON file, ``news``/``books``.
    calibration: str | None = None
    #: Precision options such as ``double_quant`` or ``damp_percent``.
    options: Mapping[str, Any] = field(default_factory=dict)
    #: What one cell at this precision asks of a Ray cluster (None: one GPU on CUDA, else one
    #: CPU); the local executor ignores them.
    num_cpus: float | None = None
    num_gpus: float | None = None


@dataclass(frozen=True)
class ModelSpec:
    """One checkpoint (a folder or hub id, optionally with a LoRA adapter) and its role."""

    label: str
    role: str
    pretrained: str
    adapter: str | None = None
    merge: bool = True
    method: str | None = None
    mode: str | None = None
    #: The unlearning run's seed: several seeds of one method and mode make a seed group on
    #: the board (mean, worst seed, durability).
    seed: int | None = None
    #: Apply the adapter to a base other than the one it records (recorded in the provenance).
    allow_other_base: bool = False
    #: None: the plan's precisions / all of the plan's corpora.
    precisions: tuple[PrecisionSpec, ...] | None = None
    corpora: tuple[str, ...] | None = None

    @property
    def method_name(self) -> str | None:
        """The unlearning method a board shows (a method model's label unless given)."""
        return self.method or (self.label if self.role == "method" else None)

    @property
    def mode_name(self) -> str:
        """``lora`` for an adapter, ``full`` for a whole checkpoint, unless given."""
        return self.mode or ("lora" if self.adapter else "full")


@dataclass(frozen=True)
class SweepOptions:
    """How every cell is evaluated; all of it is part of each cell's key."""

    batch_size: int | str = 64
    #: None: cuda when available, else cpu.
    device: str | None = None
    #: Default for precisions that do not say (full precisions ignore it).
    emulated: bool = False
    #: PrivLeak's headline Min-K% (None: the tasks' default, 40) and its AUC_retrain.
    privleak_k: int | None = None
    privleak_auc_retrain: float | None = None
    bootstrap_iters: int = 100000
    #: Also write lm-eval's per-sample files (``samples_<task>.jsonl``) next to each result.
    log_samples: bool = False
    #: ``local`` (one cell after another in this process) or ``ray`` (docs/sweep.md).
    executor: str = "local"
    #: Ray only: None starts a local runtime; ``auto`` or ``HOST:PORT`` joins a cluster.
    ray_address: str | None = None

    @property
    def resolved_device(self) -> str:
        if self.device is not None:
            return self.device
        return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class Cell:
    """One model on one corpus at one precision: one results file.

    ``precision`` is resolved once, here, from the plan's ``spec``; the cell's key, the loader
    and the provenance in its results file all read that object (a calibrated precision gets
    its texts once per cell, :func:`muse_quant.sweep.keys.plan_jobs`).
    """

    model: ModelSpec
    corpus: str
    spec: PrecisionSpec
    precision: Precision
    #: The device every cell of the plan runs on, checked once.
    device: str

    @property
    def emulated(self) -> bool:
        """Whether this precision runs emulated (always false for full precisions)."""
        return self.precision.emulated

    @property
    def name(self) -> str:
        return f"{self.model.label}/{self.corpus}/{self.precision.name}"

    def folder(self, results_dir: Path) -> Path:
        return results_dir / self.model.label / self.corpus / self.precision.name

    def lock(self, results_dir: Path) -> Path:
        """The lock its writer holds (:mod:`harness_ext.locks`), outside the cell's folder,
        which is replaced whole."""
        return results_dir / LOCKS / self.model.label / self.corpus / f"{self.precision.name}.lock"


@dataclass(frozen=True)
class Plan:
    """Models x corpora x precisions. ``corpora`` maps a MUSE corpus name (news, books) to a
    local MUSE-layout folder or ``hub``; ``results`` is the default results folder."""

    corpora: Mapping[str, str]
    models: tuple[ModelSpec, ...]
    precisions: tuple[PrecisionSpec, ...] = ()
    options: SweepOptions = field(default_factory=SweepOptions)
    results: Path | None = None

    def cells(self) -> list[Cell]:
        """Every cell, checked, ordered by model, then precision, then corpus: each checkpoint
        is loaded once and each precision built once for all corpora."""
        device = check_device(self.options.resolved_device)
        if not self.corpora:
            raise MuseQuantError("plan: no corpora; e.g. corpora: {news: path/to/muse_data}")
        for corpus in self.corpora:
            if corpus not in CORPORA:
                raise MuseQuantError(
                    f"plan: unknown corpus {corpus!r}; corpora are {', '.join(CORPORA)}"
                )
        folders = [source for source in self.corpora.values() if source != HUB]
        shared = next((f for f in folders if folders.count(f) > 1), None)
        if shared is not None:
            raise MuseQuantError(
                f"plan: corpora {' and '.join(c for c, f in self.corpora.items() if f == shared)} "
                f"both read {shared}; a MUSE data folder is one corpus"
            )
        if not self.models:
            raise MuseQuantError("plan: no models")
        cells: list[Cell] = []
        for model in self.models:
            cells += _model_cells(self, model, device)
        _check_unique(cells)
        _check_references(self)
        return cells


def _model_cells(plan: Plan, model: ModelSpec, device: str) -> list[Cell]:
    where = f"model {model.label!r}"
    if not LABEL.fullmatch(model.label):
        raise MuseQuantError(f"{where}: a label is a folder name: letters, digits and . _ + - only")
    if model.role not in ROLES:
        raise MuseQuantError(f"{where}: unknown role {model.role!r}; roles are {', '.join(ROLES)}")
    if not model.pretrained:
        what = "the base model its adapter adapts" if model.adapter else "a folder or hub id"
        raise MuseQuantError(f"{where}: no pretrained ({what})")
    corpora = model.corpora if model.corpora is not None else tuple(plan.corpora)
    unknown = [c for c in corpora if c not in plan.corpora]
    if unknown:
        raise MuseQuantError(
            f"{where}: corpus {unknown[0]!r} is not in the plan's corpora "
            f"({', '.join(plan.corpora)})"
        )
    precisions = model.precisions if model.precisions is not None else plan.precisions
    if not precisions:
        raise MuseQuantError(f"{where}: no precisions; list them in the plan or the model")
    cells = []
    for precision in precisions:
        wanted = plan.options.emulated if precision.emulated is None else precision.emulated
        try:
            resolved = resolve_precision(precision.name, precision.options, wanted)
        except MuseQuantError as e:
            raise MuseQuantError(f"{where}: {e}") from None
        cells += [Cell(model, corpus, precision, resolved, device) for corpus in corpora]
    return cells


def _check_unique(cells: list[Cell]) -> None:
    """No cell twice: not under one name, nor the same computation under two labels."""
    by_name: dict[str, Cell] = {}
    by_work: dict[tuple, Cell] = {}
    for cell in cells:
        if cell.name in by_name:
            raise MuseQuantError(
                f"duplicate cell {cell.name}: label {cell.model.label!r} or precision "
                f"{cell.precision.name!r} is listed twice"
            )
        model = cell.model
        work = (
            model.pretrained, model.adapter, model.merge if model.adapter else None,
            cell.corpus, cell.precision.name, cell.emulated, cell.spec.calibration,
            tuple(sorted(cell.spec.options.items())),
        )  # fmt: skip
        if work in by_work:
            raise MuseQuantError(
                f"duplicate cell: {by_work[work].name} and {cell.name} evaluate the same model "
                "the same way; list it once"
            )
        by_name[cell.name] = by_work[work] = cell


def _check_references(plan: Plan) -> None:
    """Exactly one target and at most one retrain model per corpus."""
    for corpus in plan.corpora:
        present = [m for m in plan.models if m.corpora is None or corpus in m.corpora]
        for role, fewest, most in (("target", 1, 1), ("retrain", 0, 1)):
            labels = [m.label for m in present if m.role == role]
            if not fewest <= len(labels) <= most:
                found = ", ".join(labels) or "none"
                count = "exactly one" if fewest == most else "at most one"
                raise MuseQuantError(
                    f"corpus {corpus}: {count} {role} model is needed, found {found}"
                )


# --------------------------------------------------------------------------- YAML


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
        data = yaml.safe_load(text)
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
        bootstrap_iters=_typed(
            data.get("bootstrap_iters", SweepOptions.bootstrap_iters),
            int,
            "options: bootstrap_iters",
        ),
        log_samples=_typed(data.get("log_samples", False), bool, "options: log_samples"),
        executor=_executor(data.get("executor", "local")),
        ray_address=_typed(data.get("ray_address"), str, "options: ray_address"),
    )


def with_executor(plan: Plan, executor: str | None, address: str | None) -> Plan:
    """The plan with the command line's ``--executor`` / ``--ray-address`` (checked)."""
    executor = _executor(executor or plan.options.executor)
    if address is not None and executor != "ray":
        raise MuseQuantError("--ray-address is for --executor ray (or executor: ray in the plan)")
    options = replace(
        plan.options, executor=executor, ray_address=address or plan.options.ray_address
    )
    return replace(plan, options=options)


def _executor(value: Any) -> str:
    if value not in EXECUTORS:
        raise MuseQuantError(
            f"options: executor={value!r}{did_you_mean(str(value), EXECUTORS)}; executors are "
            f"{', '.join(EXECUTORS)}"
        )
    return str(value)


def _resource(value: Any, where: str) -> float | None:
    """A Ray resource amount: None, or a number >= 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
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
    """``value`` if it is None or of ``kind`` (a bool is not an int here), else an error."""
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
