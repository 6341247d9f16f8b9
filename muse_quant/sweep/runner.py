"""Run a sweep: every cell of a plan through the MUSE lm-eval tasks, resumably.

Each cell writes ``RESULTS/<label>/<corpus>/<precision>/results.json``: lm-eval's results, saved
by lm-eval's own ``EvaluationTracker``, plus a ``muse_quant`` block naming the cell and its
``cell_key`` (a hash of everything that determines the result). A cell's folder is written
staged and published whole, so a cell is finished iff its results.json exists and its
``muse_quant`` block is the one this plan would write (:mod:`.keys`); a sweep killed at any
moment redoes only unfinished cells.

Done once per sweep, not once per cell: checking and hashing each checkpoint's files; reading its
float32 weights (each precision is built from them in memory, ``reusing_checkpoints``); building a
precision's model, shared by every corpus; building a corpus's lm-eval tasks (documents, VerbMem's
references cut with the model's tokenizer), shared by every cell whose tokenizer files are the
same. lm-eval's 17 s default task index is never built (a task manager over our folder alone).
"""

from __future__ import annotations

import gc
import itertools
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness_ext.doc_scores import write_doc_scores
from harness_ext.errors import MuseQuantError
from harness_ext.files import check_writable, staged_dir, write_text_atomic
from harness_ext.results_layout import PLAN_RECORD, PRUNED, RESULTS_FILE
from model_wrappers.loading import reusing_checkpoints
from model_wrappers.muse_lm import MuseLM
from muse_quant.lm_eval_patches import environment_report_once
from muse_quant.lm_eval_tasks import task_manager
from muse_quant.sweep.display import LOG_FILE, Display
from muse_quant.sweep.keys import (
    Job,
    cell_identity,
    check_cell_folder,
    plan_jobs,
    plan_record,
    stale_cells,
)
from muse_quant.sweep.plan import Plan, SweepOptions

MUSE_MODEL = "muse"


def run_sweep(
    plan: Plan,
    results_dir: Path,
    *,
    progress: bool = True,
    replace_others: bool = True,
    prune: bool = False,
) -> list[Path]:
    """Evaluate every unfinished cell; return every cell's results file, in plan order.

    ``progress`` shows a bar over cells (done/left, ETA) and one line per cell on stderr; what
    the libraries print goes to ``RESULTS/sweep.log`` either way. A cell whose folder holds
    another result (an edited plan's) is evaluated again and replaces it; with
    ``replace_others=False`` (audits) that is refused before anything runs. Cells in the
    folder that the plan no longer names are reported (``prune`` moves them into
    ``RESULTS/.pruned/``); ``RESULTS/sweep-plan.json`` records the plan's cells, unless the run
    adds to another plan's folder (``replace_others=False``).
    """
    results_dir = Path(results_dir).resolve()
    with reusing_checkpoints(), environment_report_once():
        jobs = plan_jobs(plan, results_dir)
        for job in jobs:
            check_cell_folder(job)
        others = [job for job in jobs if not job.finished and job.path.exists()]
        if others and not replace_others:
            held = cell_identity(others[0].path) or {}
            raise MuseQuantError(
                f"{others[0].path} holds another run's result (label {held.get('label')!r}, "
                f"method {held.get('method')!r}, another cell key); it is not overwritten: "
                "choose another results folder, or pass that run's method"
            )
        _make_results_dir(results_dir)
        stale = stale_cells(results_dir, jobs) if replace_others else []
        if prune:
            stale = _prune(results_dir, stale)
        if replace_others:
            write_text_atomic(results_dir / PLAN_RECORD, plan_record(jobs))
        with Display(results_dir / LOG_FILE, jobs, progress) as display:
            if stale:
                display.warn(
                    f"warning: {len(stale)} cell(s) in {results_dir} are not in this plan "
                    f"(e.g. {stale[0].relative_to(results_dir)}); the leaderboard warns about "
                    "them: muse-quant sweep --prune moves them to .pruned/"
                )
            task_sets: dict[tuple[str, str], _TaskSet] = {}
            todo = [job for job in jobs if not job.finished]
            for _, group in itertools.groupby(todo, key=_checkpoint_and_precision):
                _run_group(list(group), plan.options, task_sets, display)
    return [job.path for job in jobs]


def _checkpoint_and_precision(job: Job) -> tuple[str, str]:
    return job.cell.model.label, job.cell.precision.name


def _run_group(
    jobs: list[Job],
    options: SweepOptions,
    task_sets: dict[tuple[str, str], _TaskSet],
    display: Display,
) -> None:
    """One model at one precision on each of its corpora: the model is built once."""
    lm = None
    for job in jobs:
        started = time.perf_counter()
        display.started(job)
        key = (job.cell.corpus, job.tokenizer_id)
        if key not in task_sets:
            task_sets[key] = _TaskSet.build(job.cell.corpus, job.metadata)
        if lm is None:
            lm = MuseLM.create_from_arg_obj(
                job.model_kwargs(), {"batch_size": options.batch_size, "device": job.cell.device}
            )
        _evaluate(job, lm, task_sets[key], options)
        display.finished(job, time.perf_counter() - started)
    del lm
    gc.collect()


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
    """Run one cell into a staged folder published whole: results.json, the per-document
    scores (scores.json) and, if asked, one samples file per task; a previous result of the
    cell is replaced only by a complete one."""
    from lm_eval import simple_evaluate  # lm-eval's evaluator loads slowly
    from lm_eval.loggers import EvaluationTracker

    tasks.record(job.metadata)
    with staged_dir(job.folder) as staging:
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
            device=job.cell.device,
            bootstrap_iters=options.bootstrap_iters,
            log_samples=True,  # the per-document scores come from lm-eval's samples
            fewshot_as_multiturn=False,
        )
        # simple_evaluate names a model object by its path; `lm_eval --model muse` names the type.
        results["config"]["model"] = MUSE_MODEL
        results["muse_quant"] = job.identity
        samples = results.pop("samples")
        write_doc_scores(staging, samples)
        tracker.save_results_aggregated(results=results, samples=samples)
        for task_name in results["configs"] if options.log_samples else ():
            tracker.save_results_samples(task_name=task_name, samples=samples[task_name])
            written = staging / f"samples_{task_name}_{tracker.date_id}.jsonl"
            written.rename(staging / f"samples_{task_name}.jsonl")
        written = staging / f"results_{tracker.date_id}.json"
        if not written.is_file():
            raise MuseQuantError(
                f"{job.cell.name}: lm-eval could not write its results (see {LOG_FILE})"
            )
        written.rename(staging / RESULTS_FILE)


# --------------------------------------------------------------------------- the results folder


def _prune(results_dir: Path, stale: list[Path]) -> list[Path]:
    """Move ``stale`` cells under ``RESULTS/.pruned/<time>/`` (nothing is deleted); return
    what is left to report (nothing)."""
    into = results_dir / PRUNED / time.strftime("%Y%m%d-%H%M%S")
    for folder in stale:
        target = into / folder.relative_to(results_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        folder.rename(target)
        for parent in (folder.parent, folder.parent.parent):  # <label>/<corpus>, if now empty
            if parent != results_dir and not any(parent.iterdir()):
                parent.rmdir()
    if stale:
        print(f"muse-quant: moved {len(stale)} cell(s) not in the plan to {into}", file=sys.stderr)
    return []


def _make_results_dir(results_dir: Path) -> None:
    """Probe the folder before any cell runs, then create it."""
    check_writable(results_dir, "results folder")
    results_dir.mkdir(parents=True, exist_ok=True)
