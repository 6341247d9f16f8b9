"""Refuse to put numbers side by side that were measured differently.

Rule: for every MUSE task (``muse_<corpus>_<task>``) that several results files hold, the task's
``versions`` entry and its ``configs`` entry must be equal, except for per-run fields of the task
``metadata``: the file's own model arguments (``config.model_args``, which lm-eval merges into
every task's metadata: ``pretrained``, ``precision``, ``adapter``, ``emulated``, ...) and
:data:`PER_RUN_METADATA`. Everything else (prompts, generation settings, metric list, the
``muse_data`` folder, the task code) must match, since a board compares like with like.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harness_ext.errors import MuseQuantError

#: Task metadata that differs run to run without changing what is measured: where lm-eval found
#: the YAML, the evaluated model's tokenizer when it is not a model argument (a GGUF file's
#: folder, which muse-quant passes for VerbMem's references, as ``pretrained`` names the model),
#: and the options that only change lm-eval's own PrivLeak number (the board recomputes PrivLeak
#: from the AUCs).
PER_RUN_METADATA = ("config_source", "tokenizer", "privleak_k", "privleak_auc_retrain")


def comparable_config(config: Mapping[str, Any], model_args: Mapping[str, Any]) -> dict[str, Any]:
    """A task config without its per-run metadata (the rule in this module's docstring)."""
    ignored = set(model_args) | set(PER_RUN_METADATA)
    metadata = {k: v for k, v in (config.get("metadata") or {}).items() if k not in ignored}
    return {**config, "metadata": metadata}


def first_difference(a: Any, b: Any, path: str = "") -> str | None:
    """The dotted path of the first place two JSON values differ, None if they are equal."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for key in sorted(set(a) | set(b), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in a or key not in b:
                return where
            found = first_difference(a[key], b[key], where)
            if found is not None:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = first_difference(x, y, f"{path}[{i}]")
            if found is not None:
                return found
        return None
    return None if a == b else (path or "(whole value)")


def check_consistent(
    files: Sequence[tuple[Path, Mapping[str, Any], Mapping[str, Any]]], tasks: set[str]
) -> None:
    """Raise naming two files when they disagree on a task's version or config.

    ``files`` holds ``(path, results JSON, model args)``; only the names in ``tasks`` (the MUSE
    tasks the board reads) are compared.
    """
    seen: dict[str, tuple[Path, Any, dict[str, Any]]] = {}
    for path, data, model_args in files:
        for task in sorted(tasks & set(data.get("configs", {}))):
            version = data.get("versions", {}).get(task)
            config = comparable_config(data["configs"][task], model_args)
            if task not in seen:
                seen[task] = (path, version, config)
                continue
            first_path, first_version, first_config = seen[task]
            if version != first_version:
                what = f"version {first_version!r} vs {version!r}"
            else:
                where = first_difference(first_config, config)
                if where is None:
                    continue
                what = f"config field {where}"
            raise MuseQuantError(
                f"results files disagree on task {task} ({what}): {first_path} and {path}; "
                "a board compares like with like: re-evaluate with the same task version and "
                "config, or move one file out of the results folder"
            )
