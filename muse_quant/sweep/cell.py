"""One sweep cell, evaluated: its corpus's tasks, the cell's lock, its staged results folder.

What every executor runs for a cell (the local loop in :mod:`.runner`, a Ray task in
:mod:`.ray_executor`), so that a cell is the same computation and the same files wherever it runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from harness_ext.doc_scores import write_doc_scores
from harness_ext.errors import MuseQuantError
from harness_ext.files import staged_dir
from harness_ext.locks import try_lock, wait_lock
from harness_ext.results_layout import RESULTS_FILE
from muse_quant.lm_eval_tasks import task_manager
from muse_quant.sweep.display import LOG_FILE
from muse_quant.sweep.keys import Job
from muse_quant.sweep.plan import SweepOptions

MUSE_MODEL = "muse"


@contextlib.contextmanager
def cell_lock(job: Job, wait: bool, note: Callable[[float], None]) -> Iterator[bool]:
    """Hold the cell's lock: yields False when another process holds it and ``wait`` is
    false; with ``wait``, waits (``note(seconds)`` every minute) and yields True."""
    if not wait:
        with try_lock(job.lock) as mine:
            yield mine
        return
    with wait_lock(job.lock, note):
        yield True


@dataclass(frozen=True)
class TaskSet:
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
    def build(cls, corpus: str, metadata: dict[str, Any]) -> TaskSet:
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


def evaluate_cell(job: Job, lm: Any, tasks: TaskSet, options: SweepOptions) -> None:
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
