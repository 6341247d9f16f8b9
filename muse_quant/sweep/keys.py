"""Every cell of a plan keyed against the disk: a ``Job`` per cell, before any model loads.

A cell's ``cell_key`` hashes everything that determines its result (weight, adapter and data
files, the resolved precision with its calibration texts' hash, the evaluation options, library
versions); its results file carries that key in its ``muse_quant`` block, so a cell is finished
iff its results file is there with the block this plan would write.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness_ext import __version__
from harness_ext.doc_scores import DOC_SCORES_FILE
from harness_ext.errors import MuseQuantError
from harness_ext.evaluation import privleak_options, required_splits
from harness_ext.files import file_hashes, sha256_file
from harness_ext.muse_data import CORPORA, load_split
from harness_ext.muse_layout import split_path
from harness_ext.results_layout import PLAN_RECORD_KIND, RESULTS_FILE
from harness_ext.versions import library_versions
from model_wrappers.checkpoints import PICKLE_SUFFIXES
from model_wrappers.opening import open_checkpoint, with_calibration
from model_wrappers.precisions import Precision
from muse_quant.lm_eval_tasks import expand, muse_tasks
from muse_quant.sweep.plan import HUB, Cell, Plan

#: Version of the ``muse_quant`` block (the leaderboard reads schema 1).
SCHEMA = 1
#: The model arguments that name the checkpoint (the rest name the precision).
CHECKPOINT_ARGS = ("pretrained", "adapter", "merge", "allow_other_base")


@dataclass(frozen=True)
class Job:
    """A cell, resolved: its folder, its precision completed with calibration texts (the one
    object the key, the loader and the provenance read), the ``muse`` model's arguments as a
    results file records them, the task metadata, its ``muse_quant`` block, and whether a
    finished result is already on disk."""

    cell: Cell
    folder: Path
    #: The lock the cell's writer holds (``Cell.lock``).
    lock: Path
    precision: Precision
    model_args: dict[str, Any]
    metadata: dict[str, Any]
    identity: dict[str, Any]
    tokenizer_id: str
    finished: bool

    @property
    def path(self) -> Path:
        return self.folder / RESULTS_FILE

    def finished_now(self) -> bool:
        """Whether the cell is finished on disk now (another process may have finished it
        since the plan was keyed)."""
        return _written_by(self.path, self.identity)

    def model_kwargs(self) -> dict[str, Any]:
        """What the ``muse`` model is built from: the checkpoint and the resolved precision."""
        checkpoint = {k: v for k, v in self.model_args.items() if k in CHECKPOINT_ARGS}
        return {**checkpoint, "precision": self.precision}


def plan_jobs(plan: Plan, results_dir: Path) -> list[Job]:
    """Check the plan against the disk and key every cell (hashes model and data files, loads
    no model): a missing model or data file, an unusable calibration or PrivLeak option is a
    one-line error here."""
    cells = plan.cells()
    configs = muse_tasks()
    corpora = {
        corpus: _corpus_identity(corpus, plan.corpora[corpus], configs)
        for corpus in dict.fromkeys(cell.corpus for cell in cells)
    }
    return [_job(cell, plan, corpora[cell.corpus], results_dir) for cell in cells]



def _job(cell: Cell, plan: Plan, corpus: dict[str, Any], results_dir: Path) -> Job:
    model, precision, options, device = cell.model, cell.spec, plan.options, cell.device
    # A local folder (or GGUF file) as the muse model will name it, so that both open the same
    # checkpoint.
    local = Path(model.pretrained).expanduser()
    pretrained = str(local.resolve()) if local.exists() else model.pretrained
    try:
        opened = open_checkpoint(
            pretrained,
            adapter=model.adapter,
            merge=model.merge,
            device=device,
            allow_other_base=model.allow_other_base,
            shipped=cell.precision.shipped,
        )
        resolved = with_calibration(cell.precision, precision.calibration, opened.weights)
    except MuseQuantError as e:
        raise MuseQuantError(f"model {model.label!r}: {e}") from None
    model_args: dict[str, Any] = {"pretrained": pretrained}
    if model.adapter:
        model_args |= {"adapter": model.adapter, "merge": model.merge}
        if model.allow_other_base:
            model_args["allow_other_base"] = True
    model_args["precision"] = precision.name
    if cell.emulated:
        model_args["emulated"] = True
    if precision.calibration is not None:
        model_args["calibration"] = precision.calibration
    model_args |= precision.options
    muse_options = {
        "muse_data": None if plan.corpora[cell.corpus] == HUB else plan.corpora[cell.corpus],
        "privleak_k": options.privleak_k,
        "privleak_auc_retrain": options.privleak_auc_retrain,
    }
    metadata = {**model_args, **{k: v for k, v in muse_options.items() if v is not None}}
    if opened.weights.gguf is not None:  # VerbMem's references: the tokenizer the model uses
        metadata["tokenizer"] = opened.weights.tokenizer_name
    try:
        privleak_options(cell.corpus, metadata)
    except MuseQuantError as e:
        raise MuseQuantError(f"options: {e}") from None
    described = resolved.describe()
    if described["calibration"] is not None:  # where the texts came from is not what they are
        described["calibration"].pop("source")
    key = {
        "schema": SCHEMA,
        "weights_sha256": opened.weights.files,
        "adapter": opened.adapter.files if opened.adapter else None,
        "merge": model.merge if opened.adapter else None,
        "precision": described,
        "corpus": corpus,
        "evaluation": {
            "device": device,
            "batch_size": options.batch_size,
            "bootstrap_iters": options.bootstrap_iters,
            "log_samples": options.log_samples,
            "privleak_k": options.privleak_k,
            "privleak_auc_retrain": options.privleak_auc_retrain,
        },
        "libraries": library_versions(),
        "muse_quant": __version__,
    }
    identity = {
        "schema": SCHEMA,
        "label": model.label,
        "role": model.role,
        "method": model.method_name,
        "mode": model.mode_name,
        "corpus": cell.corpus,
        "precision": precision.name,
        "cell_key": _digest(key),
    }
    if model.seed is not None:
        identity["seed"] = model.seed
    folder = cell.folder(results_dir)
    return Job(
        cell=cell,
        folder=folder,
        lock=cell.lock(results_dir),
        precision=resolved,
        model_args=model_args,
        metadata=metadata,
        identity=identity,
        tokenizer_id=_tokenizer_id(opened.weights.folder),
        finished=_written_by(folder / RESULTS_FILE, identity),
    )


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _corpus_identity(corpus: str, data: str, configs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What a corpus's results depend on: its task versions and its data (every file its tasks
    read, checked now, or the hub dataset's pinned revision)."""
    tasks = expand(f"muse_{corpus}", configs)
    identity: dict[str, Any] = {
        "name": corpus,
        "task_versions": {t: (configs[t].get("metadata") or {}).get("version") for t in tasks},
    }
    if data == HUB:
        source = CORPORA[corpus]
        return identity | {"hub": source.repo, "revision": source.revision}
    files = {}
    for task in tasks:
        for config, split in required_splits(configs[task]["dataset_kwargs"]["muse_task"]):
            try:
                load_split(corpus, config, split, data)
            except MuseQuantError as e:
                raise MuseQuantError(f"corpus {corpus}: {e}") from None
            files[f"{config}/{split}.json"] = sha256_file(split_path(data, config, split))
    return identity | {"files_sha256": files}


def _tokenizer_id(folder: Path) -> str:
    """sha256 of a checkpoint folder's files other than weights: cells whose tokenizer files
    agree get the same VerbMem references, so they share one corpus's built tasks."""
    weights = (".safetensors", ".gguf", *PICKLE_SUFFIXES)
    files = [
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix not in weights and p.name != "generation_config.json"
    ]
    return _digest(file_hashes(folder, files))


def _written_by(path: Path, identity: dict[str, Any]) -> bool:
    """Whether ``path`` is a results file this very cell wrote (same ``muse_quant`` block)."""
    return cell_identity(path) == identity


def cell_identity(path: Path) -> dict[str, Any] | None:
    """The ``muse_quant`` block of a sweep's results file (None: no file, or not a sweep's)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    block = data.get("muse_quant") if isinstance(data, dict) else None
    return block if isinstance(block, dict) else None


def recorded_method(results_dir: Path, label: str) -> str | None:
    """The method the results files of ``label`` record (None when there are none)."""
    for path in sorted(Path(results_dir).glob(f"{label}/*/*/{RESULTS_FILE}")):
        identity = cell_identity(path)
        if identity is not None and identity.get("label") == label:
            return identity.get("method")
    return None


def stale_cells(results_dir: Path, jobs: list[Job]) -> list[Path]:
    """Cell folders of ``results_dir`` (sweep results files) that the plan no longer names:
    an edited plan's leftovers, which a board would otherwise mix in."""
    wanted = {job.folder for job in jobs}
    return sorted(
        path.parent
        for path in Path(results_dir).glob(f"*/*/*/{RESULTS_FILE}")
        if path.parent not in wanted and cell_identity(path) is not None
    )


def plan_record(jobs: list[Job]) -> str:
    """``sweep-plan.json``: the cells of the plan last run into the folder (the leaderboard
    says loudly when it reads results files that are not among them)."""
    cells = [job.path.relative_to(job.folder.parents[2]).as_posix() for job in jobs]
    return json.dumps({"kind": PLAN_RECORD_KIND, "cells": cells}, indent=1) + "\n"


def check_cell_folder(job: Job) -> None:
    """Refuse a cell folder that a sweep did not write: it is replaced whole when the cell
    runs, so it may hold only a previous result of a cell (results.json, scores.json, samples
    files)."""
    if not job.folder.exists():
        return
    names = [p.name for p in job.folder.iterdir()]
    ours = (RESULTS_FILE, DOC_SCORES_FILE)
    foreign = [n for n in names if n not in ours and not n.startswith("samples_")]
    if foreign or (job.path.exists() and cell_identity(job.path) is None):
        raise MuseQuantError(
            f"{job.folder} holds files a sweep did not write ({(foreign or names)[0]}); "
            "move them, or choose another results folder"
        )
