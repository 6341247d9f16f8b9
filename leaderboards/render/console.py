"""The board as the console shows it: per corpus its P, references, ranking and notes."""

from __future__ import annotations

from harness_ext.console import align_columns
from leaderboards.render.columns import RANKING_COLUMNS, cell_text_with_interval
from leaderboards.scores import Board


def format_summary(board: Board) -> str:
    """The short table the command prints: per corpus its P, references, ranking and notes."""
    lines = []
    for corpus in board.corpora:
        lines.append(
            f"\n{corpus.corpus}: P = {', '.join(corpus.precisions)}; target {corpus.target}; "
            f"retrain {corpus.retrain or 'none'}"
        )
        rows = [[c.header for c in RANKING_COLUMNS]]
        text = cell_text_with_interval
        rows += [[text(c, m, None) for c in RANKING_COLUMNS] for m in corpus.methods]
        if corpus.methods:
            lines += [f"  {line}" for line in align_columns(rows)]
        lines += [f"  note: {note}" for note in corpus.notes]
    return "\n".join(lines)
