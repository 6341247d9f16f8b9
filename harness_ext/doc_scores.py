"""Per-document scores: the numbers behind each aggregate, kept next to a results file.

Every interval on a board and in an audit is a bootstrap over documents, so a sweep writes
``scores.json`` beside each cell's ``results.json``: per MUSE task, the document ids and each
document's score (VerbMem/KnowMem: ROUGE-L F1 x 100; PrivLeak: every attack's score and the
text's set, forget or holdout). The sweep writes it from lm-eval's per-sample records; the
leaderboard reads it, or, beside a results file from a plain lm-eval run with ``--log_samples``,
lm-eval's own per-sample files. This module is the whole contract between them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness_ext.errors import MuseQuantError

DOC_SCORES_FILE = "scores.json"
SCHEMA = 1
#: The generation tasks' per-document metric is named after the task (``verbmem_f`` ...).
GENERATION_METRICS = ("verbmem_f", "knowmem_f", "knowmem_r")
PRIVLEAK = "privleak"
_AUC_PREFIX = "auc_"


@dataclass(frozen=True)
class TaskScores:
    """One task's per-document scores: ``scores[name][i]`` belongs to ``doc_ids[i]`` (and, for
    PrivLeak, to ``sets[i]``); ``name`` is the metric, or for PrivLeak the attack."""

    doc_ids: tuple[int, ...]
    scores: Mapping[str, tuple[float, ...]]
    sets: tuple[str, ...] | None = None


def from_samples(samples: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, Any]:
    """The ``scores.json`` document from lm-eval's per-sample records (``results["samples"]``
    of ``simple_evaluate(..., log_samples=True)``), for the MUSE tasks among them."""
    tasks: dict[str, Any] = {}
    for task, records in samples.items():
        records = sorted(records, key=lambda r: r["doc_id"])
        doc_ids = [int(r["doc_id"]) for r in records]
        if task.endswith(f"_{PRIVLEAK}"):
            attacks = [m for m in records[0] if m.startswith(_AUC_PREFIX)] if records else []
            tasks[task] = {
                "doc_ids": doc_ids,
                "sets": [r[PRIVLEAK]["set"] for r in records],
                "scores": {
                    a.removeprefix(_AUC_PREFIX): [r[a]["score"] for r in records] for a in attacks
                },
            }
            continue
        metric = next((m for m in GENERATION_METRICS if task.endswith(f"_{m}")), None)
        if metric is not None:
            tasks[task] = {"doc_ids": doc_ids, "scores": {metric: [r[metric] for r in records]}}
    return {"schema": SCHEMA, "tasks": tasks}


def write_doc_scores(folder: Path, samples: Mapping[str, Sequence[Mapping[str, Any]]]) -> Path:
    """Write ``folder/scores.json`` (compact JSON) from lm-eval's per-sample records."""
    path = Path(folder) / DOC_SCORES_FILE
    path.write_text(json.dumps(from_samples(samples), separators=(",", ":")), encoding="utf-8")
    return path


def read_lm_eval_samples(results_path: Path) -> dict[str, TaskScores] | None:
    """The per-document scores in lm-eval's own per-sample files beside one of its results files
    (``samples_<task>_<stamp>.jsonl`` next to ``results_<stamp>.json``, as ``--log_samples``
    writes them); None when there are none."""
    results_path = Path(results_path)
    stamp = results_path.stem.removeprefix("results_")
    if stamp == results_path.stem:
        return None
    entries: dict[str, Any] = {}
    for path in sorted(results_path.parent.glob(f"samples_*_{stamp}.jsonl")):
        task = path.name.removeprefix("samples_").removesuffix(f"_{stamp}.jsonl")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
            records = [json.loads(line) for line in lines if line.strip()]
            entries |= from_samples({task: records})["tasks"]  # nothing for a non-MUSE task
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise MuseQuantError(
                f"{path}: not one of lm-eval's per-sample files ({type(e).__name__}: {e}); "
                "re-run with --log_samples or remove it"
            ) from None
    if not entries:
        return None
    return {task: _task_scores(results_path, task, entry) for task, entry in entries.items()}


def read_doc_scores(path: Path) -> dict[str, TaskScores] | None:
    """The per-document scores of ``path`` (None when the file is absent); a damaged file is a
    one-line error naming it and the key."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        tasks = data["tasks"]
        if data.get("schema") != SCHEMA or not isinstance(tasks, dict):
            raise TypeError("unknown schema")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise MuseQuantError(
            f"{path}: not a per-document scores file ({e}); re-run that cell or remove it"
        ) from None
    return {task: _task_scores(path, task, entry) for task, entry in tasks.items()}


def _task_scores(path: Path, task: str, entry: Any) -> TaskScores:
    try:
        doc_ids = tuple(int(i) for i in entry["doc_ids"])
        scores = {name: tuple(values) for name, values in entry["scores"].items()}
        sets = tuple(entry["sets"]) if "sets" in entry else None
    except (KeyError, TypeError, ValueError, AttributeError):
        raise MuseQuantError(f"{path}: {task}: malformed per-document scores") from None
    for name, values in scores.items():
        bad = next((v for v in values if not _finite(v)), None)
        if len(values) != len(doc_ids) or bad is not None:
            raise MuseQuantError(
                f"{path}: {task} {name}: {len(values)} scores for {len(doc_ids)} documents"
                + (f", and {bad!r} is not a finite number" if bad is not None else "")
            )
    if sets is not None and (len(sets) != len(doc_ids) or not set(sets) <= {"forget", "holdout"}):
        raise MuseQuantError(f"{path}: {task} sets: expected forget/holdout per document")
    return TaskScores(doc_ids, scores, sets)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
