"""``leaderboard.md``: the board for READMEs and papers, stating P, references and ranking rule.

Every string from a results file goes through :func:`escape_markdown` (:func:`escape_cell` in a
table), so a label cannot open a link, an HTML tag, emphasis or a new table cell. The escapes are
backslashes, and only where Markdown would read the character as markup, so the raw file reads as
the text itself: ``KnowMem_f 11.5 > retrain's`` (no entity for ``>``, no backslash before ``_``).
"""

from __future__ import annotations

import re
import unicodedata

from leaderboards.render.columns import (
    CELL_COLUMNS,
    RANKING_COLUMNS,
    Column,
    cell_text_with_interval,
)
from leaderboards.render.describe import SEED_HEADERS, facts, opening_sentence, seed_rows
from leaderboards.scores import Board, CellScores, ModelScores

#: Each pattern matches a character Markdown (CommonMark, GFM) may read as markup there; the
#: character gets a backslash. In order: a backslash before punctuation or at the end (it would
#: escape what follows); code, emphasis and strikethrough delimiters (underscores apart, below);
#: ``#`` starting a word (a heading, or a heading's closing run); ``<`` opening a tag or
#: autolink; ``&`` starting an entity; at the start, a list or quote marker.
_MARKUP = re.compile(
    r"""\\(?=[!-/:-@\[-`{-~]|$)
    | [`*~]
    | (?<!\S)\#
    | <(?=[A-Za-z/!?])
    | &(?=\#?\w+;)
    | ^[-+](?=[\s-]|$)
    | ^>""",
    re.VERBOSE,
)
#: A run of underscores (one delimiter run, for CommonMark's emphasis rules).
_UNDERSCORES = re.compile(r"_+")
#: An underscore not inside a word (inside one it never opens or closes emphasis).
_LOOSE_UNDERSCORE = re.compile(r"(?<![^\W_])_|_(?![^\W_])")
#: An ordered-list marker starting the text (``1.`` or ``1)``): its ``.`` or ``)`` gets one.
_ORDERED = re.compile(r"^(\d{1,9})([.)])(?=\s|$)")
#: A link or image needs ``](``, ``][`` or, starting the text, a reference definition ``[x]:``.
_LINK = re.compile(r"\]\(|\]\[|^\[[^\]]*\]:")


def escape_markdown(text: str) -> str:
    """``text`` on one line, as Markdown (CommonMark/GFM) shows it literally in running text, a
    heading or a list item."""
    text = " ".join(str(text).split())
    emphasis = _underscore_emphasis(text)
    text = _MARKUP.sub(lambda m: "\\" + m.group(), text)
    if emphasis:
        text = _LOOSE_UNDERSCORE.sub(r"\\_", text)
    text = _ORDERED.sub(r"\1\\\2", text)
    return text.replace("[", "\\[") if _LINK.search(text) else text


def _underscore_emphasis(text: str) -> bool:
    """Whether an underscore run that can open emphasis comes before one that can close it
    (CommonMark's flanking rules), so that ``_`` could be read as markup (``_load_in_4bit`` and
    ``KnowMem_f`` cannot)."""
    opened = False
    padded = f" {text} "  # the text's ends count as whitespace
    for run in _UNDERSCORES.finditer(padded):
        before, after = padded[run.start() - 1], padded[run.end()]
        space_before, space_after = before.isspace(), after.isspace()
        mark_before, mark_after = _punctuation(before), _punctuation(after)
        left = not space_after and (not mark_after or space_before or mark_before)
        right = not space_before and (not mark_before or space_after or mark_after)
        if opened and right and (not left or mark_after):  # it can close what opened
            return True
        opened = opened or (left and (not right or mark_before))  # it can open
    return False


def _punctuation(char: str) -> bool:
    return unicodedata.category(char)[0] in "PS"


def escape_cell(text: str) -> str:
    """``text`` as :func:`escape_markdown`, also inside a table cell (``|`` ends a cell)."""
    return escape_markdown(text).replace("|", "\\|")


def markdown_table(
    columns: tuple[Column, ...], rows: list[tuple[ModelScores, CellScores | None]]
) -> str:
    """A table of ``columns`` with one line per (model, cell); the audit report uses it too."""
    lines = [
        "| " + " | ".join(escape_cell(c.header) for c in columns) + " |",
        "|" + "|".join("---:" if c.sorts_by_number else "---" for c in columns) + "|",
    ]
    for model, cell in rows:
        texts = (escape_cell(cell_text_with_interval(c, model, cell)) for c in columns)
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
                "| " + " | ".join(escape_cell(t) for t in row) + " |"
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
