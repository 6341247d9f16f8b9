"""The names of a board's files, light to import: :mod:`.board_files` writes them, and
:mod:`leaderboards.write` replaces a board folder only when it holds nothing else."""

from __future__ import annotations

from leaderboards.render.json_board import JSON_NAME

MARKDOWN_NAME, CSV_NAME, HTML_NAME = "leaderboard.md", "leaderboard.csv", "index.html"
#: The files at the top of a board folder.
BOARD_FILES = (MARKDOWN_NAME, CSV_NAME, JSON_NAME, HTML_NAME)
#: The folder of the ``model-index`` blocks, one ``<label>.yaml`` each.
MODEL_INDEX_DIR = "model-index"


def is_board_file(relative: str) -> bool:
    """Whether a path (relative to the board folder, ``/``-separated) is one a board writes."""
    folder, _, name = relative.rpartition("/")
    return (not folder and name in BOARD_FILES) or (
        folder == MODEL_INDEX_DIR and name.endswith(".yaml") and not name.startswith(".")
    )
