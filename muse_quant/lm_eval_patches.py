"""Every change muse-quant makes to lm-eval's own objects, in one place, each with its reason.

lm-eval offers no hook for either, so each swaps one attribute for the duration of a block and
puts it back: nothing outlives the block.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from muse_quant.lm_eval_tasks import include_paths


@contextlib.contextmanager
def environment_report_once() -> Iterator[None]:
    """lm-eval adds an environment report to every result (``pip list`` and more through
    subprocesses, about 0.25 s); the cells of a sweep share one process, so collect it once."""
    import lm_eval.evaluator as evaluator  # lm-eval's evaluator loads slowly

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


@contextlib.contextmanager
def muse_task_manager(include_defaults: bool) -> Iterator[None]:
    """Make lm-eval's ``run`` build its task manager over our folder (+ its own if needed).

    lm-eval's ``run`` constructs ``lm_eval.tasks.TaskManager`` itself and offers no flag to skip
    its default index (about 17 s per process), so the class is swapped for the call.
    """
    import lm_eval.tasks  # lm-eval's task index loads slowly

    original = lm_eval.tasks.TaskManager

    class MuseTaskManager(original):  # type: ignore[misc, valid-type]
        def __init__(self, *a: Any, include_path: Any = None, **kw: Any) -> None:
            kw["include_defaults"] = include_defaults
            super().__init__(*a, include_path=include_paths(include_path), **kw)

    lm_eval.tasks.TaskManager = MuseTaskManager
    try:
        yield
    finally:
        lm_eval.tasks.TaskManager = original
