"""``leaderboard.md``: the board for READMEs and papers, stating P, references and ranking rule.

Every string from a results file goes through :func:`escape_markdown`, so a label cannot open a
link, an HTML tag, emphasis or a new table cell.
"""

from __future__ import annotations

import re

from leaderboards.render.columns import (
    CELL_COLUMNS,
    RANKING_COLUMNS,
    Column,
    cell_text_with_interval,
)
from leaderboards.render.describe import SEED_HEADERS, facts, opening_sentence, seed_rows
from leaderboards.scores import Board, CellScores, ModelScores

_BACKSLASHED = re.compile(r"([\\`*_\[\]|~#])")
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def escape_markdown(text: str) -> str:
    """Text that Markdown (CommonMark/GFM, tables included) shows literally, on one line."""
    text = " ".join(str(text).split())
    text = _BACKSLASHED.sub(r"\\\1", text)
    return "".join(_ENTITIES.get(ch, ch) for ch in text)


def markdown_table(
    columns: tuple[Column, ...], rows: list[tuple[ModelScores, CellScores | None]]
) -> str:
    """A table of ``columns`` with one line per (model, cell); the audit report uses it too."""
    lines = [
        "| " + " | ".join(escape_markdown(c.header) for c in columns) + " |",
        "|" + "|".join("---:" if c.sorts_by_number else "---" for c in columns) + "|",
    ]
    for model, cell in rows:
        texts = (escape_markdown(cell_text_with_interval(c, model, cell)) for c in columns)
        lines.append("| " + " | ".join(texts) + " |")
    return "\n".join(lines)


def render_markdown(board: Board) -> str:
    """The whole board as Markdown: per corpus its facts, ranking, per-precision table, notes."""
    out = [
        "# Unlearning robustness under quantization (MUSE)",
        "",
        f"Made by `muse-quant leaderboard` from {len(board.sources)} lm-eval results files. "
        "Retentions are fractions of the target's score at full precision; reverts are "
        "retention here minus retention at full precision, in percentage points.",
    ]
    for corpus in board.corpora:
        out += ["", f"## {escape_markdown(corpus.corpus)}", ""]
        out += [f"**{escape_markdown(opening_sentence(corpus))}**", ""]
        out += [f"- **{name}**: {escape_markdown(text)}" for name, text in facts(board, corpus)]
        out += ["", "### Ranking", ""]
        if corpus.methods:
            out.append(markdown_table(RANKING_COLUMNS, [(m, None) for m in corpus.methods]))
        else:
            out.append("No unlearned models to rank.")
        if corpus.seed_groups:
            out += ["", "### Seeds (each method ranked by its worst seed)", ""]
            out.append("| " + " | ".join(SEED_HEADERS) + " |")
            out.append("|" + "|".join("---" for _ in SEED_HEADERS) + "|")
            out += [
                "| " + " | ".join(escape_markdown(t) for t in row) + " |"
                for row in seed_rows(corpus)
            ]
        out += ["", "### Every model at every precision", ""]
        models = corpus.models
        out.append(markdown_table(CELL_COLUMNS, [(m, cell) for m in models for cell in m.cells]))
        if corpus.notes:
            out += ["", "Notes:", ""] + [f"- {escape_markdown(note)}" for note in corpus.notes]
    if board.warnings:
        out += ["", "## Warnings", ""] + [f"- {escape_markdown(w)}" for w in board.warnings]
    return "\n".join(out) + "\n"
