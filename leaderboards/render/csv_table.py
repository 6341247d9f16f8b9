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

from leaderboards.robustness import Board, CellScores, Criteria, ModelScores

_SUMMARY_FIELDS = [f.name for f in fields(ModelScores) if f.name != "cells"]
_CELL_FIELDS = [f.name for f in fields(CellScores) if f.name != "criteria"]
_CRITERIA_FIELDS = [f.name for f in fields(Criteria)]
HEADER = ["corpus", *_SUMMARY_FIELDS, *_CELL_FIELDS, *_CRITERIA_FIELDS]
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, tuple):
        value = " ".join(value)
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _row(corpus: str, model: ModelScores, cell: CellScores) -> list[Any]:
    values = [corpus]
    values += [getattr(model, name) for name in _SUMMARY_FIELDS]
    values += [getattr(cell, name) for name in _CELL_FIELDS]
    values += list(cell.criteria.marks())
    return [_csv_value(v) for v in values]


def render_csv(board: Board) -> str:
    """Every model at every precision (methods in rank order, then the references)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADER)
    for corpus in board.corpora:
        for model in corpus.methods + corpus.references:
            for cell in model.cells:
                writer.writerow(_row(corpus.corpus, model, cell))
    return buffer.getvalue()
