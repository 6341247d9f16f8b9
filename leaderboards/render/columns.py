"""The columns every human-readable table shows, defined once for Markdown, HTML and the
terminal: header, explanation, how a value is read from the scores and how it is written."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from leaderboards.robustness import CRITERIA, CellScores, ModelScores

#: How the tables mark a criterion: passed, failed, not computable.
CRITERION_MARKS = {True: "✓", False: "✗", None: "n/a"}


@dataclass(frozen=True)
class Column:
    """One table column: ``value`` reads it from a model (and, in per-precision tables, a cell)."""

    header: str
    title: str
    kind: str
    value: Callable[[ModelScores, CellScores | None], Any]

    @property
    def sorts_by_number(self) -> bool:
        return self.kind != "text"


def format_value(kind: str, value: Any) -> str:
    """A value as the tables write it: scores 2 decimals, retentions in %, reverts in points."""
    if kind == "criterion":
        return CRITERION_MARKS[value]
    if value is None:
        return "n/a"
    formats: dict[str, Callable[[Any], str]] = {
        "score": lambda v: f"{v:.2f}",
        "ratio": lambda v: f"{100 * v:.1f}%",
        "delta": lambda v: f"{100 * v:+.1f} pp",
        "signed": lambda v: f"{v:+.1f}",
        "auc": lambda v: f"{v:.4f}",
    }
    return formats.get(kind, str)(value)


def sort_value(column: Column, model: ModelScores, cell: CellScores | None) -> float | None:
    """What the HTML table sorts a numeric or criterion column by (None: n/a, sorts last)."""
    value = column.value(model, cell)
    return None if value is None else float(value)


def _criterion(index: int) -> Callable[[ModelScores, CellScores | None], bool | None]:
    return lambda model, cell: cell.criteria.marks()[index] if cell else None


def _cell_field(name: str) -> Callable[[ModelScores, CellScores | None], Any]:
    return lambda model, cell: getattr(cell, name) if cell else None


RANK = Column(
    "Rank", "default lexicographic rank (see the ranking rule)", "rank", lambda m, c: m.rank
)
MODEL = Column("Model", "the results' label", "text", lambda m, c: m.label)

#: The ranking table: one row per method, the numbers behind its rank.
RANKING_COLUMNS = (
    RANK,
    MODEL,
    Column("Method", "unlearning method", "text", lambda m, c: m.method or ""),
    Column("Mode", "full or LoRA fine-tuning", "text", lambda m, c: m.mode or ""),
    Column(
        "Worst precision", "where it passes fewest criteria", "text", lambda m, c: m.worst_precision
    ),
    Column(
        "Criteria at worst",
        "criteria passed at the worst precision / computable there",
        "count",
        lambda m, c: m.criteria_passed,
    ),
    Column(
        "Worst forget retention",
        "max over precisions of max(VerbMem_f, KnowMem_f) / target's at full precision",
        "ratio",
        lambda m, c: m.worst_forget_retention,
    ),
    Column(
        "Worst utility retention",
        "min over precisions of KnowMem_r / target's at full precision",
        "ratio",
        lambda m, c: m.worst_utility_retention,
    ),
)

#: The per-precision table: one row per model and precision.
CELL_COLUMNS = (
    RANK,
    MODEL,
    Column("Role", "method, target or retrain", "text", lambda m, c: m.role),
    Column("Precision", "precision of the evaluated weights", "text", _cell_field("precision")),
    Column("VerbMem_f", "ROUGE-L F1 x 100 on the forget set", "score", _cell_field("verbmem_f")),
    Column("KnowMem_f", "QA ROUGE-L F1 x 100, forget set", "score", _cell_field("knowmem_f")),
    Column(
        "KnowMem_r", "QA ROUGE-L F1 x 100, retain set (utility)", "score", _cell_field("knowmem_r")
    ),
    Column(
        "PrivLeak", "(AUC - AUC_retrain) / AUC_retrain x 100", "signed", _cell_field("privleak")
    ),
    Column(
        "Ret. VerbMem_f",
        "VerbMem_f / target's at full precision",
        "ratio",
        _cell_field("retention_verbmem_f"),
    ),
    Column(
        "Ret. KnowMem_f",
        "KnowMem_f / target's at full precision",
        "ratio",
        _cell_field("retention_knowmem_f"),
    ),
    Column(
        "Revert VerbMem_f",
        "retention here - retention at full precision",
        "delta",
        _cell_field("revert_verbmem_f"),
    ),
    Column(
        "Revert KnowMem_f",
        "retention here - retention at full precision",
        "delta",
        _cell_field("revert_knowmem_f"),
    ),
    Column(
        "Utility ret.",
        "KnowMem_r / target's at full precision",
        "ratio",
        _cell_field("utility_retention"),
    ),
    *(Column(name, text, "criterion", _criterion(i)) for i, (name, text) in enumerate(CRITERIA)),
)


def cell_text(column: Column, model: ModelScores, cell: CellScores | None) -> str:
    """The text of one table cell (the criteria-count column also says how many were computable)."""
    value = column.value(model, cell)
    if column.kind == "rank":
        return "ref" if value is None else str(value)
    if column.kind == "count":
        return f"{value}/{model.criteria_computable}"
    return format_value(column.kind, value)
