"""Glue to lm-eval itself: where our task folder is, and a task manager that knows it.

lm-eval's default task index costs about 17 s to build per process; a task manager over our
folder alone costs nothing, so programmatic runs (tests, benchmarks, sweeps) and ``muse-quant
eval`` build that one whenever only MUSE tasks are asked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tasks


def tasks_path() -> Path:
    """The folder of muse-quant's lm-eval tasks (give it to ``lm_eval --include_path``)."""
    return Path(tasks.__file__).resolve().parent


def task_manager(
    metadata: dict[str, Any] | None = None,
    include_path: str | list[str] | None = None,
    include_defaults: bool = False,
) -> Any:
    """An lm-eval ``TaskManager`` over our tasks (plus ``include_path``; lm-eval's own if asked).

    ``metadata`` reaches every task: pass the model args (VerbMem needs ``pretrained`` or
    ``tokenizer``) and the MUSE options (``muse_data``, ``privleak_k``, ``privleak_auc_retrain``),
    as lm-eval's command line does by merging ``--model_args`` into ``--metadata``.
    """
    from lm_eval.tasks import TaskManager  # lm-eval's task registry loads slowly

    return TaskManager(
        include_path=include_paths(include_path),
        include_defaults=include_defaults,
        metadata=metadata or {},
    )


def include_paths(extra: Any = None) -> list[str]:
    """Our task folder first, then any folder(s) the user includes (theirs win on name clashes)."""
    if extra is None:
        extra = []
    elif isinstance(extra, (str, Path)):
        extra = [extra]
    return [str(tasks_path()), *map(str, extra)]


def muse_tasks() -> dict[str, dict[str, Any]]:
    """Our tasks and groups by name, with their raw (includes resolved) YAML configs."""
    return {name: entry.cfg or {} for name, entry in task_manager().task_index.items()}


def expand(name: str, configs: dict[str, dict[str, Any]]) -> list[str]:
    """A task name, or a group's member tasks (recursively)."""
    members = configs[name].get("task")
    if "group" in configs[name] and isinstance(members, list):
        names = [m if isinstance(m, str) else m.get("task", "") for m in members]
        return [leaf for n in names if n in configs for leaf in expand(n, configs)]
    return [name]
