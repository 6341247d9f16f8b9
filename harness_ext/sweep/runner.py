"""Run a sweep: every cell of a plan through the MUSE lm-eval tasks, resumably.

Each cell writes ``RESULTS/<label>/<corpus>/<precision>/results.json``: lm-eval's results, saved
by lm-eval's own ``EvaluationTracker``, plus a ``muse_quant`` block naming the cell and its
``cell_key`` (a hash of everything that determines the result). The file is written in a hidden
staging folder and renamed into place, so a cell is finished iff its results.json exists and its
``muse_quant`` block is the one this plan would write; a sweep killed at any moment redoes only
unfinished cells.

Done once per sweep, not once per cell: checking and hashing each checkpoint's files; reading its
float32 weights (each precision is built from them in memory, ``reusing_checkpoints``); building a
precision's model, shared by every corpus; building a corpus's lm-eval tasks (documents, VerbMem's
references cut with the model's tokenizer), shared by every cell whose tokenizer files are the
same. lm-eval's 17 s default task index is never built (a task manager over our folder alone).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

from harness_ext import __version__
from harness_ext.errors import MuseQuantError
from harness_ext.sweep.plan import HUB, Cell, Plan, SweepOptions

#: Version of the ``muse_quant`` block (the leaderboard reads schema 1).
SCHEMA = 1
RESULTS_FILE = "results.json"
#: What lm-eval and the model libraries print during a sweep, and one line per cell.
LOG_FILE = "sweep.log"
#: Hidden staging folders inside a cell's folder; one left behind was killed mid-write.
STAGING_PREFIX = ".sweep-"
MUSE_MODEL = "muse"


@dataclass(frozen=True)
class Job:
    """A cell, resolved: its folder, the ``muse`` model's arguments, the task metadata, its
    ``muse_quant`` block, and whether a finished result is already on disk."""

    cell: Cell
    folder: Path
    model_args: dict[str, Any]
    metadata: dict[str, Any]
    identity: dict[str, Any]
    tokenizer_id: str
    finished: bool

    @property
    def path(self) -> Path:
        return self.folder / RESULTS_FILE


def plan_jobs(plan: Plan, results_dir: Path) -> list[Job]:
    """Check the plan against the disk and key every cell (hashes model and data files, loads
    no model): a missing model or data file, an unusable calibration or PrivLeak option is a
    one-line error here."""
    from harness_ext.harness import muse_tasks
    from model_wrappers.loading import check_device

    cells = plan.cells()
    device = check_device(plan.options.resolved_device)
    configs = muse_tasks()
    corpora = {
        corpus: _corpus_identity(corpus, plan.corpora[corpus], configs)
        for corpus in dict.fromkeys(cell.corpus for cell in cells)
    }
    return [_job(cell, plan, device, corpora[cell.corpus], results_dir) for cell in cells]


def run_sweep(plan: Plan, results_dir: Path, *, progress: bool = True) -> list[Path]:
    """Evaluate every unfinished cell; return every cell's results file, in plan order.

    ``progress`` shows a bar over cells (done/left, ETA) and one line per cell on stderr; what
    the libraries print goes to ``RESULTS/sweep.log`` either way.
    """
    from model_wrappers.loading import reusing_checkpoints

    results_dir = Path(results_dir).resolve()
    with reusing_checkpoints(), _environment_report_once():
        jobs = plan_jobs(plan, results_dir)
        _make_results_dir(results_dir)
        _remove_staging(jobs)
        with _Display(results_dir / LOG_FILE, jobs, progress) as display:
            task_sets: dict[tuple[str, str], _TaskSet] = {}
            todo = [job for job in jobs if not job.finished]
            for _, group in itertools.groupby(todo, key=_checkpoint_and_precision):
                _run_group(list(group), plan.options, task_sets, display)
    return [job.path for job in jobs]


@contextlib.contextmanager
def _environment_report_once() -> Iterator[None]:
    """lm-eval adds an environment report to every result (``pip list`` and more through
    subprocesses, about 0.25 s); the cells of a sweep share one process, so collect it once."""
    import lm_eval.evaluator as evaluator

    collect, report = evaluator.add_env_info, {}

    def add_collected(results: dict[str, Any]) -> None:
        if not report:
            collect(report)
        results.update(report)

    evaluator.add_env_info = add_collected
    try:
        yield
    finally:
        evaluator.add_env_info = collect


def _checkpoint_and_precision(job: Job) -> tuple[str, str]:
    return job.cell.model.label, job.cell.precision.name


def _run_group(
    jobs: list[Job],
    options: SweepOptions,
    task_sets: dict[tuple[str, str], _TaskSet],
    display: _Display,
) -> None:
    """One model at one precision on each of its corpora: the model is built once."""
    from model_wrappers.muse_lm import MuseLM

    lm = None
    for job in jobs:
        started = time.perf_counter()
        display.started(job)
        key = (job.cell.corpus, job.tokenizer_id)
        if key not in task_sets:
            task_sets[key] = _TaskSet.build(job.cell.corpus, job.metadata)
        if lm is None:
            lm = MuseLM.create_from_arg_obj(
                job.model_args,
                {"batch_size": options.batch_size, "device": options.resolved_device},
            )
        _evaluate(job, lm, task_sets[key], options)
        display.finished(job, time.perf_counter() - started)
    del lm
    gc.collect()


# --------------------------------------------------------------------------- keys


def _job(cell: Cell, plan: Plan, device: str, corpus: dict[str, Any], results_dir: Path) -> Job:
    from harness_ext.evaluation import privleak_options
    from model_wrappers.loading import open_checkpoint, resolve_calibration
    from model_wrappers.precisions import resolve_precision
    from model_wrappers.provenance import library_versions

    model, precision, options = cell.model, cell.precision, plan.options
    # A local folder as the muse model will name it, so that both open the same checkpoint.
    local = Path(model.pretrained).expanduser()
    pretrained = str(local.resolve()) if local.is_dir() else model.pretrained
    try:
        opened = open_checkpoint(
            pretrained, adapter=model.adapter, merge=model.merge, device=device
        )
        spec, _ = resolve_precision(precision.name, precision.options, cell.emulated)
        if spec.family.calibrated:
            limit = spec.options.get("calibration_size")
            calibration = resolve_calibration(precision.calibration, opened.weights.folder, limit)
            spec = replace(spec, calibration=calibration)
    except MuseQuantError as e:
        raise MuseQuantError(f"model {model.label!r}: {e}") from None
    model_args: dict[str, Any] = {"pretrained": pretrained}
    if model.adapter:
        model_args |= {"adapter": model.adapter, "merge": model.merge}
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
    try:
        privleak_options(cell.corpus, metadata)
    except MuseQuantError as e:
        raise MuseQuantError(f"options: {e}") from None
    described = spec.describe()
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
    folder = cell.folder(results_dir)
    return Job(
        cell=cell,
        folder=folder,
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
    from harness_ext.evaluation import required_splits
    from harness_ext.harness import expand
    from harness_ext.hashing import sha256_file
    from harness_ext.muse_data import CORPORA, load_split
    from harness_ext.muse_layout import split_path

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
    from model_wrappers.loading import PICKLE_SUFFIXES
    from model_wrappers.provenance import file_hashes

    weights = (".safetensors", ".gguf", *PICKLE_SUFFIXES)
    files = [
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix not in weights and p.name != "generation_config.json"
    ]
    return _digest(file_hashes(folder, files))


def _written_by(path: Path, identity: dict[str, Any]) -> bool:
    """Whether ``path`` is a results file this very cell wrote (same ``muse_quant`` block)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("muse_quant") == identity


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class _TaskSet:
    """A corpus's lm-eval tasks (the ``muse_<corpus>`` group), built once and reused.

    lm-eval rebuilds a task's requests on every ``evaluate`` and keeps no answer in the task, so
    one set serves many models; only the task ``metadata`` lm-eval records is set per cell, to
    what a fresh run of that cell records (its own model arguments).
    """

    manager: Any
    group: Any
    tasks: dict[str, Any]
    #: Per task, the metadata lm-eval and the YAML put there (version, config_source).
    own_metadata: dict[str, dict[str, Any]]

    @classmethod
    def build(cls, corpus: str, metadata: dict[str, Any]) -> _TaskSet:
        from harness_ext.harness import task_manager

        manager = task_manager(metadata)
        loaded = manager.load([f"muse_{corpus}"])
        own = {
            name: {k: v for k, v in task.config.metadata.items() if k not in metadata}
            for name, task in loaded["tasks"].items()
        }
        return cls(manager, loaded["groups"][f"muse_{corpus}"], loaded["tasks"], own)

    def record(self, metadata: dict[str, Any]) -> None:
        for name, task in self.tasks.items():
            task.config.metadata = {**self.own_metadata[name], **metadata}


def _evaluate(job: Job, lm: Any, tasks: _TaskSet, options: SweepOptions) -> None:
    """Run one cell and move its results (and samples) into place, results.json last."""
    from lm_eval import simple_evaluate
    from lm_eval.loggers import EvaluationTracker

    tasks.record(job.metadata)
    job.folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=job.folder, prefix=STAGING_PREFIX))
    try:
        tracker = EvaluationTracker(output_path=str(staging / RESULTS_FILE))
        tracker.general_config_tracker.log_experiment_args(
            model_source=MUSE_MODEL,
            model_args=job.model_args,
            system_instruction=None,
            chat_template=None,
            fewshot_as_multiturn=False,
        )
        results = simple_evaluate(
            model=lm,
            model_args=job.model_args,
            tasks=[tasks.group],
            task_manager=tasks.manager,
            batch_size=options.batch_size,
            device=options.resolved_device,
            bootstrap_iters=options.bootstrap_iters,
            log_samples=options.log_samples,
            fewshot_as_multiturn=False,
        )
        # simple_evaluate names a model object by its path; `lm_eval --model muse` names the type.
        results["config"]["model"] = MUSE_MODEL
        results["muse_quant"] = job.identity
        samples = results.pop("samples", None)
        tracker.save_results_aggregated(results=results, samples=samples)
        for stale in job.folder.glob("samples_*.jsonl"):
            stale.unlink()
        for task_name in results["configs"] if samples else ():
            tracker.save_results_samples(task_name=task_name, samples=samples[task_name])
            written = staging / f"samples_{task_name}_{tracker.date_id}.jsonl"
            os.replace(written, job.folder / f"samples_{task_name}.jsonl")
        written = staging / f"results_{tracker.date_id}.json"
        if not written.is_file():
            raise MuseQuantError(
                f"{job.cell.name}: lm-eval could not write its results (see {LOG_FILE})"
            )
        os.replace(written, job.path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# --------------------------------------------------------------------------- the results folder


def _make_results_dir(results_dir: Path) -> None:
    """Create the folder and prove it writable; on failure leave no folder we created."""
    created = [p for p in (results_dir, *results_dir.parents) if not p.exists()]
    try:
        results_dir.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=results_dir).close()
    except OSError as e:
        if created:
            shutil.rmtree(created[-1], ignore_errors=True)
        raise MuseQuantError(
            f"results folder {results_dir}: cannot write there ({e.strerror or e}); "
            "choose another (--results DIR)"
        ) from None


def _remove_staging(jobs: Sequence[Job]) -> None:
    """Staging folders a killed sweep left behind (never results: those were not renamed)."""
    for job in jobs:
        for stale in job.folder.glob(f"{STAGING_PREFIX}*"):
            shutil.rmtree(stale, ignore_errors=True)


class _Display:
    """The console during a sweep: one line per cell on stderr (done/total, seconds, time left)
    and, on a terminal, a bar over cells; meanwhile whatever the libraries print (their own bars
    and warnings, on file descriptors 1 and 2) goes to the sweep log, with the same lines."""

    def __init__(self, log: Path, jobs: Sequence[Job], progress: bool) -> None:
        self.log, self.total, self.progress = log, len(jobs), progress
        self.done = sum(job.finished for job in jobs)
        self.skipped = [job for job in jobs if job.finished]
        self.seconds: list[float] = []

    def __enter__(self) -> _Display:
        from tqdm.auto import tqdm

        sys.stdout.flush()
        sys.stderr.flush()
        self.saved = {fd: os.dup(fd) for fd in (1, 2)}
        self.console: TextIO = os.fdopen(os.dup(self.saved[2]), "w", buffering=1)
        self.sink = open(self.log, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
        for fd in (1, 2):
            os.dup2(self.sink.fileno(), fd)
        self.bar = tqdm(
            total=self.total,
            initial=self.done,
            unit="cell",
            desc="sweep",
            file=self.console,
            disable=not (self.progress and self.console.isatty()),
            dynamic_ncols=True,
        )
        left = self.total - self.done
        self.say(f"sweep of {self.total} cells: {self.done} finished earlier, {left} to run")
        for job in self.skipped:
            self.say(f"{_cell_line(job)}: skipped (finished earlier)")
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, saved in self.saved.items():
            os.dup2(saved, fd)
            os.close(saved)
        self.sink.close()
        self.console.close()

    def say(self, line: str) -> None:
        print(line, file=self.sink, flush=True)
        if self.progress:
            self.bar.write(line, file=self.console)

    def started(self, job: Job) -> None:
        print(f"{_cell_line(job)}: running", file=self.sink, flush=True)
        self.bar.set_postfix_str(job.cell.name)

    def finished(self, job: Job, seconds: float) -> None:
        self.done += 1
        self.seconds.append(seconds)
        left = self.total - self.done
        eta = sum(self.seconds) / len(self.seconds) * left
        estimate = f", about {eta:.0f} s left" if left else ""
        self.say(f"[{self.done}/{self.total}] {_cell_line(job)}: {seconds:.1f} s{estimate}")
        self.bar.update(1)


def _cell_line(job: Job) -> str:
    cell = job.cell
    return f"{cell.model.label} / {cell.corpus} / {cell.precision.name}"


# --------------------------------------------------------------------------- reports


def format_cells(jobs: Sequence[Job]) -> str:
    """The cells a sweep has, one line each, and which are finished (for ``--dry-run``)."""
    rows = [("label", "role", "method", "corpus", "precision", "emulated", "status")]
    for job in jobs:
        cell = job.cell
        rows.append(
            (
                cell.model.label,
                cell.model.role,
                cell.model.method_name or "-",
                cell.corpus,
                cell.precision.name,
                "yes" if cell.emulated else "no",
                "finished" if job.finished else "to run",
            )
        )
    done = sum(job.finished for job in jobs)
    head = f"{len(jobs)} cells: {done} finished, {len(jobs) - done} to run"
    return "\n".join([head, *_columns(rows)])


def summary_table(paths: Sequence[Path]) -> str:
    """Per corpus, label x precision: VerbMem_f, KnowMem_f, KnowMem_r and the headline AUC
    (Min-K%, as each file's PrivLeak task used), read back from the results files."""
    from harness_ext.metrics.mia import DEFAULT_ATTACK

    by_corpus: dict[str, list[tuple[str, ...]]] = {}
    for path in paths:
        data = json.loads(path.read_text(encoding="utf-8"))
        ident, results = data["muse_quant"], data["results"]
        corpus = ident["corpus"]
        privleak = f"muse_{corpus}_privleak"
        k = (data["configs"].get(privleak, {}).get("metadata") or {}).get("privleak_k")
        attack = DEFAULT_ATTACK if k is None else f"mink_{k}"
        values = [
            results.get(f"muse_{corpus}_{metric}", {}).get(f"{metric},none")
            for metric in ("verbmem_f", "knowmem_f", "knowmem_r")
        ]
        auc = results.get(privleak, {}).get(f"auc_{attack},none")
        by_corpus.setdefault(corpus, []).append(
            (
                ident["label"],
                ident["precision"],
                *(_number(v, "{:.2f}") for v in values),
                _number(auc, "{:.3f}") + ("" if attack == DEFAULT_ATTACK else f" ({attack})"),
            )
        )
    blocks = []
    for corpus, rows in by_corpus.items():
        head = (corpus, "precision", "VerbMem_f", "KnowMem_f", "KnowMem_r", "AUC")
        blocks.append("\n".join(_columns([head, *rows])))
    return "\n\n".join(blocks)


def _number(value: Any, fmt: str) -> str:
    return fmt.format(value) if isinstance(value, int | float) else "n/a"


def _columns(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in rows)
    return [line.rstrip() for line in lines]
