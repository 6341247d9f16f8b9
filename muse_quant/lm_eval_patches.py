"""Every change muse-quant makes to lm-eval's own objects, in one place, each with its reason.

lm-eval offers no hook for any of them, so each swaps one attribute for the duration of a block
and puts it back: nothing outlives the block.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
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
def git_hash_quietly() -> Iterator[None]:
    """lm-eval records the working folder's ``git describe --always`` in every result, running
    git with its stderr on ours, so outside a git checkout every evaluation prints git's
    ``fatal: not a git repository``. The same command runs with its stderr discarded; lm-eval's
    own fallback (the commit read from a ``.git`` folder) and its answer are kept."""
    import lm_eval.evaluator as evaluator  # lm-eval's evaluator loads slowly
    from lm_eval.loggers.utils import get_commit_from_path

    original = evaluator.get_git_commit_hash

    def quiet_git_hash() -> str | None:
        try:
            described = subprocess.check_output(
                ["git", "describe", "--always"], stderr=subprocess.DEVNULL
            )
        except (subprocess.CalledProcessError, FileNotFoundError):  # not a checkout; no git
            return get_commit_from_path(os.getcwd())
        return described.strip().decode()

    evaluator.get_git_commit_hash = quiet_git_hash
    try:
        yield
    finally:
        evaluator.get_git_commit_hash = original


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
