"""Read lm-eval results files into rows, one per (label, corpus, precision).

Any file in lm-eval's results schema works, ours or anyone's. A row's identity comes from the
``muse_quant`` key the sweep writes (``schema``, ``label``, ``role``, ``method``, ``mode``,
``corpus``, ``precision``); for other files the label is ``pretrained`` (``+adapter``) from
``config.model_args``, the precision comes from ``config.muse_provenance.precision.name`` or the
model arguments, the corpus from the task names, and the role from ``--target``/``--retrain``
(default ``method``). When two files give the same (label, corpus, precision), the newest by
lm-eval's ``date`` is used and a warning names both.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from harness_ext.doc_scores import (
    DOC_SCORES_FILE,
    TaskScores,
    read_doc_scores,
    read_lm_eval_samples,
)
from harness_ext.errors import MuseQuantError
from harness_ext.precision_names import precision_from_model_args
from harness_ext.results_layout import PLAN_RECORD, PLAN_RECORD_KIND, PRUNED
from leaderboards.consistency import check_consistent

ROLES = ("target", "retrain", "method")
#: The ``muse_quant`` key's schema this reader understands.
MUSE_QUANT_SCHEMA = 1
MUSE_TASK = re.compile(r"^muse_(?P<corpus>.+)_(?P<task>verbmem_f|knowmem_f|knowmem_r|privleak)$")
_AUC_KEY = re.compile(r"^auc_(?P<attack>.+),none$")


@dataclass(frozen=True)
class ResultRow:
    """One model at one precision on one corpus, as its results file reported it.

    Scores are the file's own (x 100 for VerbMem/KnowMem; AUCs in [0, 1]); None where the file
    lacks that task. ``aucs`` maps an attack (``mink_40``, ``zlib``, ...) to its AUC.
    """

    label: str
    role: str | None
    method: str | None
    mode: str | None
    corpus: str
    precision: str
    verbmem_f: float | None
    knowmem_f: float | None
    knowmem_r: float | None
    aucs: Mapping[str, float]
    data: str | None
    source: str
    date: float | None
    #: The unlearning seed the file records (None: not said).
    seed: int | None = None
    #: Per task (``verbmem_f``, ``knowmem_f``, ``knowmem_r``, ``privleak``) its per-document
    #: scores, from the ``scores.json`` beside the file; None when there is none.
    doc_scores: Mapping[str, TaskScores] | None = None


@dataclass(frozen=True)
class Collection:
    """Every row of a results folder, with the files read and what was worth a warning."""

    rows: tuple[ResultRow, ...]
    files: tuple[str, ...]
    warnings: tuple[str, ...]


def model_args_of(data: Mapping[str, Any]) -> dict[str, Any]:
    """``config.model_args`` as a dict (older lm-eval wrote it as a ``k=v,k=v`` string)."""
    args = (data.get("config") or {}).get("model_args") or {}
    if isinstance(args, str):
        pairs = (item.split("=", 1) for item in args.split(",") if "=" in item)
        return {k.strip(): v.strip() for k, v in pairs}
    return dict(args) if isinstance(args, Mapping) else {}


def _is_results_file(data: Any) -> bool:
    return isinstance(data, dict) and all(
        isinstance(data.get(key), dict) for key in ("results", "configs", "versions")
    )


def read_results_file(path: Path) -> dict[str, Any] | None:
    """The parsed file, or None when it is JSON but not an lm-eval results file.

    Invalid JSON is an error rather than a skip: a truncated results file left out silently
    would change the board.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise MuseQuantError(
            f"{path}: not valid JSON ({e.msg}, line {e.lineno}); a truncated results file? "
            "re-run its evaluation or move it out of the results folder"
        ) from None
    except (UnicodeDecodeError, OSError) as e:
        raise MuseQuantError(f"{path}: cannot read it ({e})") from None
    return data if _is_results_file(data) else None


def _checked(path: Path, task: str, key: str, value: Any, what: str, top: float) -> float:
    """``value`` as a float, or a one-line error naming the file and the key when it is not a
    finite number in [0, top] (a damaged file, or not a muse-quant result)."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not (number and math.isfinite(value) and 0 <= value <= top):
        raise MuseQuantError(
            f"{path}: {task} {key} = {value!r} is not {what} in [0, {top:g}]; re-run that cell "
            "or remove the file"
        )
    return float(value)


def _score(path: Path, results: Mapping[str, Any], task: str, metric: str) -> float | None:
    """A memorization score (ROUGE-L F1 x 100); None when the file has no such task."""
    key = f"{metric},none"
    if key not in (results.get(task) or {}):
        return None
    return _checked(path, task, key, results[task][key], "a score", 100)


def _aucs(path: Path, results: Mapping[str, Any], task: str) -> dict[str, float]:
    return {
        match.group("attack"): _checked(path, task, key, value, "an AUC", 1)
        for key, value in (results.get(task) or {}).items()
        if (match := _AUC_KEY.match(key)) is not None and "_stderr" not in key
    }


def _identity(path: Path, data: Mapping[str, Any]) -> dict[str, Any] | None:
    """The sweep's ``muse_quant`` key, checked; None for files written without it."""
    ident = data.get("muse_quant")
    if ident is None:
        return None
    schema = ident.get("schema") if isinstance(ident, dict) else None
    if schema != MUSE_QUANT_SCHEMA:
        raise MuseQuantError(
            f"{path}: muse_quant key with schema {schema!r}; this muse-quant reads schema "
            f"{MUSE_QUANT_SCHEMA}"
        )
    for key in ("label", "corpus", "precision"):
        if not isinstance(ident.get(key), str) or not ident[key]:
            raise MuseQuantError(f"{path}: muse_quant.{key} must be a non-empty string")
    if ident.get("role") not in ROLES:
        raise MuseQuantError(f"{path}: muse_quant.role {ident.get('role')!r} is not one of {ROLES}")
    return ident


def _foreign_label(path: Path, model_args: Mapping[str, Any]) -> str:
    pretrained = model_args.get("pretrained")
    if not pretrained:
        raise MuseQuantError(
            f"{path}: no muse_quant key and no pretrained in config.model_args, so no label"
        )
    adapter = model_args.get("adapter") or model_args.get("peft")
    return f"{pretrained}+{adapter}" if adapter else str(pretrained)


def _foreign_precision(path: Path, data: Mapping[str, Any], model_args: Mapping[str, Any]) -> str:
    config = data.get("config") or {}
    named = ((config.get("muse_provenance") or {}).get("precision") or {}).get("name")
    precision = named or precision_from_model_args(model_args, config.get("model_dtype"))
    if precision is None:
        raise MuseQuantError(
            f"{path}: cannot tell its precision (no muse_quant key, no "
            "config.muse_provenance.precision.name, no precision/dtype/load_in_4bit/load_in_8bit "
            "model argument, no model_dtype)"
        )
    return precision


def rows_from_results(
    path: Path, data: Mapping[str, Any], source: str
) -> tuple[list[ResultRow], list[str]]:
    """The rows one results file holds (one per corpus), and warnings about missing tasks.

    Roles stay as the file says (None for foreign files); :func:`collect_results` resolves them.
    """
    results = data["results"]
    tasks_by_corpus: dict[str, set[str]] = {}
    for name in results:
        match = MUSE_TASK.match(name)
        if match:
            tasks_by_corpus.setdefault(match.group("corpus"), set()).add(match.group("task"))
    ident = _identity(path, data)
    model_args = model_args_of(data)
    if ident is not None:
        if ident["corpus"] not in tasks_by_corpus:
            raise MuseQuantError(
                f"{path}: muse_quant.corpus is {ident['corpus']!r} but the file holds no "
                f"muse_{ident['corpus']}_* results"
            )
        tasks_by_corpus = {ident["corpus"]: tasks_by_corpus[ident["corpus"]]}
        label, precision, role = ident["label"], ident["precision"], ident["role"]
        method, mode = ident.get("method"), ident.get("mode")
        seed = ident.get("seed") if isinstance(ident.get("seed"), int) else None
    elif not tasks_by_corpus:
        return [], []
    else:
        label, role, method, mode = _foreign_label(path, model_args), None, None, None
        seed = None
        precision = _foreign_precision(path, data, model_args)
    rows, warnings = [], []
    per_doc = (
        read_doc_scores(path.parent / DOC_SCORES_FILE)
        if ident is not None
        else read_lm_eval_samples(path)
    )
    for corpus, tasks in sorted(tasks_by_corpus.items()):
        missing = sorted({"verbmem_f", "knowmem_f", "knowmem_r", "privleak"} - tasks)
        if missing:
            warnings.append(f"{path}: no {', '.join(missing)} results for {corpus} (shown as n/a)")
        first_task = f"muse_{corpus}_{min(tasks)}"
        metadata = (data["configs"].get(first_task) or {}).get("metadata") or {}
        rows.append(
            ResultRow(
                label=label,
                role=role,
                method=method,
                mode=mode,
                corpus=corpus,
                precision=precision,
                verbmem_f=_score(path, results, f"muse_{corpus}_verbmem_f", "verbmem_f"),
                knowmem_f=_score(path, results, f"muse_{corpus}_knowmem_f", "knowmem_f"),
                knowmem_r=_score(path, results, f"muse_{corpus}_knowmem_r", "knowmem_r"),
                aucs=_aucs(path, results, f"muse_{corpus}_privleak"),
                data=metadata.get("muse_data"),
                source=source,
                date=data.get("date") if isinstance(data.get("date"), int | float) else None,
                seed=seed,
                doc_scores=_corpus_doc_scores(per_doc, corpus),
            )
        )
    return rows, warnings


def _corpus_doc_scores(
    per_doc: Mapping[str, TaskScores] | None, corpus: str
) -> dict[str, TaskScores] | None:
    """A corpus's per-document scores by task (``verbmem_f``, ..., ``privleak``)."""
    if per_doc is None:
        return None
    prefix = f"muse_{corpus}_"
    return {t.removeprefix(prefix): v for t, v in per_doc.items() if t.startswith(prefix)}


def find_results_files(results_dir: Path, exclude: Path | None = None) -> list[Path]:
    """``**/*.json`` under the folder (hidden folders included: lm-eval names its output folder
    after the model path, ``.cache__...`` for a model under ``.cache``), except under
    ``exclude``, the board's own folder when it sits inside the results folder."""
    paths = sorted(
        p
        for p in results_dir.rglob("*.json")
        if p.name not in (DOC_SCORES_FILE, PLAN_RECORD)
        and PRUNED not in p.relative_to(results_dir).parts
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
