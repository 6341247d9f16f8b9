"""A sweep plan: which models, at which precisions, on which corpora (docs/sweep.md).

This module holds what a plan is (:class:`Plan` and its parts) and how it expands into cells;
:mod:`.plan_yaml` reads one from YAML (``load_plan``). Either way :meth:`Plan.cells` checks it
and lists its cells (model x corpus x precision) in the order that loads each checkpoint once.
Every mistake is a one-line :class:`MuseQuantError`, raised before any model loads or any file
is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from harness_ext.errors import MuseQuantError, did_you_mean
from harness_ext.muse_data import CORPORA
from harness_ext.precision_names import split_deployment
from harness_ext.results_layout import LOCKS
from model_wrappers.opening import check_device
from model_wrappers.precisions import Precision, resolve_precision
from muse_quant.sweep.names import check_label, check_precision_name, shown
from muse_quant.threads import thread_count_problem

ROLES = ("target", "retrain", "method")
#: A corpus value that reads MUSE's pinned hub dataset instead of a local folder.
HUB = "hub"
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
    """How every cell is evaluated; what changes its numbers is part of its key (:mod:`.keys`)."""

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
    #: CPU threads per cell (None: the process's own setting, ``OMP_NUM_THREADS`` or one).
    threads: int | None = None

    def __post_init__(self) -> None:
        threads = self.threads
        problem = None if threads is None else thread_count_problem(threads)
        if problem:
            raise MuseQuantError(
                f"options: threads={threads!r}: {problem} per cell, or leave it out for the "
                "process's own setting"
            )

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
    where = f"model {shown(model.label)}"
    check_label(model.label, where)
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
        options = _relearning_data(precision, [plan.corpora[c] for c in corpora], where)
        try:
            resolved = resolve_precision(precision.name, options, wanted)
        except MuseQuantError as e:
            raise MuseQuantError(f"{where}: {e}") from None
        check_precision_name(resolved.name, where)
        if precision.calibration is not None and not resolved.calibrated:
            raise MuseQuantError(
                f"{where}: precision {resolved.name} takes no calibration texts (only calibrated "
                "ones do: gptq-, awq-); remove its calibration"
            )
        cells += [Cell(model, corpus, precision, resolved, device) for corpus in corpora]
    return cells


def _relearning_data(
    precision: PrecisionSpec, data: list[str], where: str
) -> dict[str, Any]:
    """The precision's options, with ``relearn_data`` defaulting to the one corpus's data folder
    when a step relearns: relearning reads the data the tasks score, so it can leave out the
    scored documents."""
    steps, _ = split_deployment(precision.name)
    relearns = any(step.startswith("relearn-") for step in steps)
    if not relearns or precision.options.get("relearn_data") is not None:
        return dict(precision.options)
    if len(data) != 1 or not Path(data[0]).is_dir():
        raise MuseQuantError(
            f"{where}: precision {precision.name} relearns: give it relearn_data: <MUSE data "
            "folder> (its cells' corpora are not one local folder)"
        )
    return {**precision.options, "relearn_data": data[0]}


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


def with_executor(plan: Plan, executor: str | None, address: str | None) -> Plan:
    """The plan with the command line's ``--executor`` / ``--ray-address`` (checked)."""
    executor = executor_name(executor or plan.options.executor)
    if address is not None and executor != "ray":
        raise MuseQuantError("--ray-address is for --executor ray (or executor: ray in the plan)")
    options = replace(
        plan.options, executor=executor, ray_address=address or plan.options.ray_address
    )
    return replace(plan, options=options)


def executor_name(value: Any) -> str:
    """``value`` if it names an executor, else the one-line error naming the closest."""
    if value not in EXECUTORS:
        raise MuseQuantError(
            f"options: executor={value!r}{did_you_mean(str(value), EXECUTORS)}; executors are "
            f"{', '.join(EXECUTORS)}"
        )
    return str(value)
