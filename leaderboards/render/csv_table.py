"""``leaderboard.csv``: one row per (corpus, model, precision), raw numbers, for spreadsheets.

Written with the csv module (quotes, commas and newlines in labels are quoted). A text cell that
a spreadsheet would run as a formula (starting with ``= + - @``, tab or CR) gets a leading
``'``, OWASP's advice against CSV injection.
"""

from __future__ import annotations

import csv
import io
from dataclasses import fields
from typing import Any

from leaderboards.scores import Board, CellScores, Criteria, ModelScores

#: A model's intervals, one low and one high column each.
_SUMMARY_INTERVALS = ("worst_revert_interval", "worst_utility_interval")
_SUMMARY_FIELDS = [
    f.name for f in fields(ModelScores) if f.name != "cells" and f.name not in _SUMMARY_INTERVALS
]
_CELL_FIELDS = [f.name for f in fields(CellScores) if f.name not in ("criteria", "intervals")]
#: The cell fields that have an interval.
CELL_INTERVALS = (
    "verbmem_f", "knowmem_f", "knowmem_r", "auc", "privleak", "retention_verbmem_f",
    "retention_knowmem_f", "revert_verbmem_f", "revert_knowmem_f", "utility_retention",
)  # fmt: skip
_CRITERIA_FIELDS = [f.name for f in fields(Criteria)]
HEADER = [
    "corpus",
    *_SUMMARY_FIELDS,
    *(f"{name}_{end}" for name in _SUMMARY_INTERVALS for end in ("low", "high")),
    *_CELL_FIELDS,
    *(f"{name}_{end}" for name in CELL_INTERVALS for end in ("low", "high")),
    *_CRITERIA_FIELDS,
]
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, tuple):
        value = " ".join(value)
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _bounds(interval: tuple[float, float] | None) -> tuple[Any, Any]:
    return (None, None) if interval is None else interval


def _row(corpus: str, model: ModelScores, cell: CellScores) -> list[Any]:
    values = [corpus]
    values += [getattr(model, name) for name in _SUMMARY_FIELDS]
    values += [bound for name in _SUMMARY_INTERVALS for bound in _bounds(getattr(model, name))]
    values += [getattr(cell, name) for name in _CELL_FIELDS]
    values += [bound for name in CELL_INTERVALS for bound in _bounds(cell.interval(name))]
    values += list(cell.criteria.marks())
    return [_csv_value(v) for v in values]


def render_csv(board: Board) -> str:
    """Every model at every precision (methods in rank order, then the references)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADER)
    for corpus in board.corpora:
        for model in corpus.models:
            for cell in model.cells:
                writer.writerow(_row(corpus.corpus, model, cell))
    return buffer.getvalue()
