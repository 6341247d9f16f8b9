"""What a sweep prints: its cells and which are finished (``--dry-run``), then a summary of
the scores its results files hold."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness_ext.console import align_columns
from harness_ext.metrics.mia import DEFAULT_ATTACK
from muse_quant.sweep.keys import Job


def format_cells(jobs: Sequence[Job]) -> str:
    """The cells a sweep has, one line each, and which are finished (for ``--dry-run``)."""
    rows = [("label", "role", "method", "corpus", "precision", "emulated", "status")]
    for job in jobs:
        cell = job.cell
        rows.append(
            (
                cell.model.label,
                cell.model.role,
                cell.model.method_name or "-",
                cell.corpus,
                cell.precision.name,
                "yes" if cell.emulated else "no",
                "finished" if job.finished else "to run",
            )
        )
    done = sum(job.finished for job in jobs)
    head = f"{len(jobs)} cells: {done} finished, {len(jobs) - done} to run"
    return "\n".join([head, *align_columns(rows)])


def summary_table(paths: Sequence[Path]) -> str:
    """Per corpus, label x precision: VerbMem_f, KnowMem_f, KnowMem_r and the headline AUC
    (Min-K%, as each file's PrivLeak task used), read back from the results files."""
    by_corpus: dict[str, list[tuple[str, ...]]] = {}
    for path in paths:
        data = json.loads(path.read_text(encoding="utf-8"))
        ident, results = data["muse_quant"], data["results"]
        corpus = ident["corpus"]
        privleak = f"muse_{corpus}_privleak"
        k = (data["configs"].get(privleak, {}).get("metadata") or {}).get("privleak_k")
        attack = DEFAULT_ATTACK if k is None else f"mink_{k}"
        values = [
            results.get(f"muse_{corpus}_{metric}", {}).get(f"{metric},none")
            for metric in ("verbmem_f", "knowmem_f", "knowmem_r")
        ]
        auc = results.get(privleak, {}).get(f"auc_{attack},none")
        by_corpus.setdefault(corpus, []).append(
            (
                ident["label"],
                ident["precision"],
                *(_number(v, "{:.2f}") for v in values),
                _number(auc, "{:.3f}") + ("" if attack == DEFAULT_ATTACK else f" ({attack})"),
            )
        )
    blocks = []
    for corpus, rows in by_corpus.items():
        head = (corpus, "precision", "VerbMem_f", "KnowMem_f", "KnowMem_r", "AUC")
        blocks.append("\n".join(align_columns([head, *rows])))
    return "\n\n".join(blocks)


def _number(value: Any, fmt: str) -> str:
    return fmt.format(value) if isinstance(value, int | float) else "n/a"
