"""Read a folder of lm-eval results files into rows, one per (label, corpus, precision).

Any file in lm-eval's results schema works, ours or anyone's; each is read by
:mod:`leaderboards.results_file`. Across the files this decides what one file cannot: the roles
(the files' own, else ``--target``/``--retrain``, default ``method``), which file wins when two
give the same (label, corpus, precision) (the newest by lm-eval's ``date``, with a warning naming
both), whether the files agree on task versions and configs, and whether they are the cells of
one sweep plan.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

from harness_ext.doc_scores import DOC_SCORES_FILE
from harness_ext.errors import MuseQuantError
from harness_ext.files import is_staging
from harness_ext.results_layout import PLAN_RECORD, PLAN_RECORD_KIND, PRUNED
from leaderboards.consistency import check_consistent
from leaderboards.results_file import (
    MUSE_TASK,
    ResultRow,
    model_args_of,
    read_results_file,
    rows_from_results,
)


@dataclass(frozen=True)
class Collection:
    """Every row of a results folder, with the files read and what was worth a warning."""

    rows: tuple[ResultRow, ...]
    files: tuple[str, ...]
    warnings: tuple[str, ...]


def find_results_files(results_dir: Path, exclude: Path | None = None) -> list[Path]:
    """``**/*.json`` under the folder (hidden folders included: lm-eval names its output folder
    after the model path, ``.cache__...`` for a model under ``.cache``), except under
    ``exclude``, the board's own folder when it sits inside the results folder, and in a cell a
    sweep has not published (a staging folder, complete or not, left by a killed sweep)."""
    paths = sorted(
        p
        for p in results_dir.rglob("*.json")
        if p.name not in (DOC_SCORES_FILE, PLAN_RECORD)
        and PRUNED not in (parts := p.relative_to(results_dir).parts)
        and not any(is_staging(part) for part in parts[:-1])
    )
    if exclude is None:
        return paths
    return [path for path in paths if not path.resolve().is_relative_to(exclude.resolve())]


def _resolve_roles(
    rows: list[ResultRow], target: str | None, retrain: str | None
) -> list[ResultRow]:
    labels = sorted({row.label for row in rows})
    for flag, label in (("--target", target), ("--retrain", retrain)):
        if label is not None and label not in labels:
            raise MuseQuantError(
                f"{flag} {label!r}: no results with that label; labels found: {', '.join(labels)}"
            )
    if target is not None and target == retrain:
        raise MuseQuantError(f"{target!r} cannot be both --target and --retrain")
    declared: dict[str, set[str]] = {}
    for row in rows:
        if row.role is not None:
            declared.setdefault(row.label, set()).add(row.role)
    roles = {}
    for label in labels:
        if label == target:
            roles[label] = "target"
        elif label == retrain:
            roles[label] = "retrain"
        elif len(declared.get(label, ())) > 1:
            raise MuseQuantError(
                f"label {label!r} has several roles in its results files "
                f"({', '.join(sorted(declared[label]))}); give it one with --target/--retrain"
            )
        else:
            roles[label] = next(iter(declared.get(label, ())), "method")
    return [replace(row, role=roles[row.label]) for row in rows]


def _newest_per_cell(rows: list[ResultRow]) -> tuple[list[ResultRow], list[str]]:
    by_cell: dict[tuple[str, str, str], list[ResultRow]] = {}
    for row in rows:
        by_cell.setdefault((row.label, row.corpus, row.precision), []).append(row)
    kept, warnings = [], []
    for (label, corpus, precision), cell_rows in by_cell.items():
        newest = max(cell_rows, key=lambda r: r.date if r.date is not None else -math.inf)
        kept.append(newest)
        if len(cell_rows) > 1:
            others = ", ".join(r.source for r in cell_rows if r is not newest)
            warnings.append(
                f"{label} / {corpus} / {precision}: {len(cell_rows)} results files; using the "
                f"newest by lm-eval's date, {newest.source} (ignored: {others})"
            )
    return kept, warnings


def collect_results(
    results_dir: Path,
    *,
    target: str | None = None,
    retrain: str | None = None,
    exclude: Path | None = None,
) -> Collection:
    """All MUSE rows under ``results_dir``, roles resolved, one per (label, corpus, precision).

    ``target``/``retrain`` name the labels of the reference models (overriding what files say).
    Raises :class:`MuseQuantError` for invalid JSON, inconsistent task versions or configs, and
    when no MUSE results are found.
    """
    if not results_dir.is_dir():
        raise MuseQuantError(f"{results_dir}: not a folder of lm-eval results files")
    rows: list[ResultRow] = []
    files, warnings, loaded = [], [], []
    for path in find_results_files(results_dir, exclude):
        source = path.relative_to(results_dir).as_posix()
        data = read_results_file(path)
        if data is None:
            warnings.append(f"{path}: skipped, not an lm-eval results file")
            continue
        file_rows, file_warnings = rows_from_results(path, data, source)
        if not file_rows:
            warnings.append(f"{path}: skipped, no MUSE (muse_*) results in it")
            continue
        rows += file_rows
        warnings += file_warnings
        files.append(source)
        loaded.append((path, data, model_args_of(data)))
    if not rows:
        raise MuseQuantError(
            f"{results_dir}: no lm-eval results files with MUSE tasks found (looked for **/*.json)"
        )
    check_consistent(
        loaded, {name for _, data, _ in loaded for name in data["configs"] if MUSE_TASK.match(name)}
    )
    rows, duplicate_warnings = _newest_per_cell(_resolve_roles(rows, target, retrain))
    warnings += _outside_the_plan(results_dir, files)
    return Collection(tuple(rows), tuple(files), tuple(warnings + duplicate_warnings))


def _outside_the_plan(results_dir: Path, files: list[str]) -> list[str]:
    """A loud warning when the folder's last sweep plan (``sweep-plan.json``) does not name
    every results file read: the board then mixes cells of several plans."""
    try:
        record = json.loads((results_dir / PLAN_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(record, dict) or record.get("kind") != PLAN_RECORD_KIND:
        return []
    outside = [f for f in files if f not in set(record.get("cells") or ())]
    if not outside:
        return []
    return [
        f"NOT ONE PLAN: {len(outside)} results file(s) are not cells of the sweep plan last run "
        f"into {results_dir} (e.g. {outside[0]}); the board mixes them in. Remove them, or run "
        "muse-quant sweep --prune with the plan to move them aside"
    ]
