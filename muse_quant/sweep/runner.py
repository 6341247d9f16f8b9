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
from pathlib import Path

from harness_ext.errors import MuseQuantError
from harness_ext.files import check_apart, check_writable, write_text_atomic
from harness_ext.results_layout import PLAN_RECORD, PRUNED
from model_wrappers.muse_model import muse_model
from model_wrappers.opening import reusing_checkpoints
from muse_quant.lm_eval_patches import environment_report_once, git_hash_quietly
from muse_quant.sweep.cell import TaskSet, cell_lock, evaluate_cell
from muse_quant.sweep.display import LOG_FILE, Display
from muse_quant.sweep.keys import (
    Job,
    cell_identity,
    check_cell_folder,
    plan_jobs,
    plan_record,
    stale_cells,
)
from muse_quant.sweep.plan import HUB, Plan, SweepOptions
from muse_quant.threads import set_threads


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
    with reusing_checkpoints(), environment_report_once(), git_hash_quietly():
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
        _make_results_dir(results_dir, plan)
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
            todo = [job for job in jobs if not job.finished]
            if plan.options.executor == "ray" and todo:
                from muse_quant.sweep.ray_executor import run_on_ray  # Ray loads slowly

                failed = run_on_ray(todo, plan.options, display)
                if failed:
                    raise MuseQuantError(
                        f"{len(failed)} cell(s) failed on Ray, every other cell is finished; "
                        f"run the sweep again to retry them: {'; '.join(failed)}"
                    )
                return [job.path for job in jobs]
            if plan.options.threads is not None:  # one cell at a time: all of them for it
                set_threads(plan.options.threads)
            task_sets: dict[tuple[str, str], TaskSet] = {}
            # Cells another process holds are left to it, then waited for: run here only if
            # that process ended without finishing them.
            for wait in (False, True):
                held = []
                for _, group in itertools.groupby(todo, key=_checkpoint_and_precision):
                    held += _run_group(list(group), plan.options, task_sets, display, wait)
                todo = held
    return [job.path for job in jobs]


def _checkpoint_and_precision(job: Job) -> tuple[str, str]:
    return job.cell.model.label, job.cell.precision.name


def _run_group(
    jobs: list[Job],
    options: SweepOptions,
    task_sets: dict[tuple[str, str], TaskSet],
    display: Display,
    wait: bool,
) -> list[Job]:
    """One model at one precision on each of its corpora: the model is built once. Each cell
    runs under its lock; a cell another process holds is returned (``wait=False``) or waited for
    (``wait=True``), and one that process finished is not run again."""
    lm, held = None, []
    for job in jobs:
        with cell_lock(job, wait, display.waiting(job)) as mine:
            if not mine:
                display.left_to_another(job)
                held.append(job)
                continue
            if job.finished_now():
                display.finished_elsewhere(job)
                continue
            started = time.perf_counter()
            display.started(job)
            key = (job.cell.corpus, job.tokenizer_id)
            if key not in task_sets:
                task_sets[key] = TaskSet.build(job.cell.corpus, job.metadata)
            if lm is None:
                lm = muse_model(
                    job.model_kwargs(),
                    {"batch_size": options.batch_size, "device": job.cell.device},
                )
            evaluate_cell(job, lm, task_sets[key], options)
            display.finished(job, time.perf_counter() - started)
    del lm
    gc.collect()
    return held


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


def _make_results_dir(results_dir: Path, plan: Plan) -> None:
    """Probe the folder before any cell runs (writable, apart from every folder the plan
    reads), then create it."""
    check_writable(results_dir, "results folder")
    specs = [p for m in plan.models for p in m.precisions or ()] + list(plan.precisions)
    inputs = [(f"corpus {name}", folder) for name, folder in plan.corpora.items() if folder != HUB]
    inputs += [(f"{what} of model {m.label}", getattr(m, what)) for m in plan.models
               for what in ("pretrained", "adapter")]  # fmt: skip
    inputs += [(f"calibration of {p.name}", p.calibration) for p in specs]
    check_apart(results_dir, "results folder", inputs, holding=True)
    results_dir.mkdir(parents=True, exist_ok=True)
