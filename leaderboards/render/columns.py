"""The columns every human-readable table shows, defined once for Markdown, HTML and the
terminal: header, explanation, how a value is read from the scores and how it is written."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from leaderboards.intervals import Interval
from leaderboards.scores import CRITERIA, GGUF_MARKER, CellScores, ModelScores

#: How the tables mark a criterion: passed, failed, not computable.
CRITERION_MARKS = {True: "✓", False: "✗", None: "n/a"}


@dataclass(frozen=True)
class Column:
    """One table column: ``value`` reads it from a model (and, in per-precision tables, a cell)."""

    header: str
    title: str
    kind: str
    value: Callable[[ModelScores, CellScores | None], Any]
    #: The value's 95% interval, for the columns that have one.
    interval: Callable[[ModelScores, CellScores | None], Interval | None] | None = None

    def interval_text(self, model: ModelScores, cell: CellScores | None) -> str:
        """``[low, high]`` in the column's format, or ``""``."""
        bounds = self.interval(model, cell) if self.interval else None
        if bounds is None:
            return ""
        texts = [format_value(self.kind, b) for b in bounds]
        unit = next((u for u in (" pp", "%") if texts[0].endswith(u)), "")
        return "[" + ", ".join(t.removesuffix(unit) for t in texts) + "]" + unit.strip()

    @property
    def sorts_by_number(self) -> bool:
        return self.kind not in ("text", "marks", "verdict")


def format_value(kind: str, value: Any) -> str:
    """A value as the tables write it: scores 2 decimals, retentions in %, reverts in points."""
    if kind in ("marks", "verdict"):
        return str(value)
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


def _cell_field(name: str) -> Callable[[ModelScores, CellScores | None], Any]:
    return lambda model, cell: getattr(cell, name) if cell else None


def _cell_interval(name: str) -> Callable[[ModelScores, CellScores | None], Interval | None]:
    return lambda model, cell: cell.interval(name) if cell else None


def _measured(header: str, title: str, kind: str, name: str) -> Column:
    """A per-precision column with its interval."""
    return Column(header, title, kind, _cell_field(name), _cell_interval(name))


def _criteria_marks(model: ModelScores, cell: CellScores | None) -> str:
    return "".join(CRITERION_MARKS[m] if m is not None else "?" for m in cell.criteria.marks())


RANK = Column(
    "Rank", "rank by the ranking rule (shared: the intervals cannot order them)", "rank",
    lambda m, c: m.rank,
)  # fmt: skip
MODEL = Column(
    "Model",
    f"the results' label ({GGUF_MARKER.strip()}: evaluated from a GGUF file, see the notes)",
    "text",
    lambda m, c: m.label + (GGUF_MARKER if m.gguf is not None else ""),
)

#: The ranking table: one row per method, its verdict and the numbers behind its rank.
RANKING_COLUMNS = (
    RANK,
    MODEL,
    Column("Method", "unlearning method", "text", lambda m, c: m.method or ""),
    Column("Mode", "full or LoRA fine-tuning", "text", lambda m, c: m.mode or ""),
    Column(
        "Verdict",
        "holds / reverts / inconclusive after quantization, or the full-precision gate's "
        "never forgot / lost utility (see the verdict rule)",
        "verdict",
        lambda m, c: m.verdict or "n/a",
    ),
    Column(
        "Worst revert",
        "largest revert over the quantized precisions and forget metrics (retention there - "
        "at full precision), with its 95% interval",
        "delta",
        lambda m, c: m.worst_revert,
        lambda m, c: m.worst_revert_interval,
    ),
    Column("at", "where the worst revert is", "text", lambda m, c: m.worst_revert_precision or ""),
    Column(
        "Criteria at worst",
        "criteria passed at the worst precision (where it passes fewest) / computable there",
        "count",
        lambda m, c: m.criteria_passed,
    ),
    Column(
        "Worst utility retention",
        "min over precisions of KnowMem_r / target's at full precision, with its 95% interval",
        "ratio",
        lambda m, c: m.worst_utility_retention,
        lambda m, c: m.worst_utility_interval,
    ),
    Column(
        "Durability certificate",
        "seeds whose VerbMem_f and KnowMem_f reverts have 95% upper bounds at or below epsilon "
        "(the revert tolerance) at every deployment in D / the method's seeds; n/a: a seed "
        "lacks a cell or an interval in D (see the certificate rule)",
        "text",
        lambda m, c: m.certificate.text if m.certificate else None,
    ),
)

#: The per-precision table: one row per model and precision, every number with its interval.
CELL_COLUMNS = (
    RANK,
    MODEL,
    Column("Precision", "precision of the evaluated weights", "text", _cell_field("precision")),
    _measured("VerbMem_f", "ROUGE-L F1 x 100 on the forget set", "score", "verbmem_f"),
    _measured("KnowMem_f", "QA ROUGE-L F1 x 100, forget set", "score", "knowmem_f"),
    _measured("KnowMem_r", "QA ROUGE-L F1 x 100, retain set (utility)", "score", "knowmem_r"),
    _measured("PrivLeak", "(AUC - AUC_retrain) / AUC_retrain x 100", "signed", "privleak"),
    _measured(
        "Ret. VerbMem_f", "VerbMem_f / target's at full precision", "ratio", "retention_verbmem_f"
    ),
    _measured(
        "Ret. KnowMem_f", "KnowMem_f / target's at full precision", "ratio", "retention_knowmem_f"
    ),
    _measured(
        "Revert VerbMem_f",
        "VerbMem_f retention here - at full precision",
        "delta",
        "revert_verbmem_f",
    ),
    _measured(
        "Revert KnowMem_f",
        "KnowMem_f retention here - at full precision",
        "delta",
        "revert_knowmem_f",
    ),
    _measured(
        "Utility ret.", "KnowMem_r / target's at full precision", "ratio", "utility_retention"
    ),
    Column(
        "C1-C4",
        "; ".join(f"{name}: {text}" for name, text in CRITERIA) + " (✓ pass, ✗ fail, ? n/a)",
        "marks",
        _criteria_marks,
    ),
)


def cell_text(column: Column, model: ModelScores, cell: CellScores | None) -> str:
    """The text of one table cell (the criteria-count column also says how many were computable)."""
    value = column.value(model, cell)
    if column.kind == "rank":
        return "ref" if value is None else str(value)
    if column.kind == "count":
        return f"{value}/{model.criteria_computable}"
    return format_value(column.kind, value)


def cell_text_with_interval(column: Column, model: ModelScores, cell: CellScores | None) -> str:
    """The cell's text followed by its interval, for one-line tables (Markdown, CSV)."""
    interval = column.interval_text(model, cell)
    text = cell_text(column, model, cell)
    return f"{text} {interval}" if interval else text
