"""The names of a board's files, light to import: :mod:`.board_files` writes them, and
:mod:`leaderboards.write` replaces a board folder only when it holds nothing else."""

from __future__ import annotations

from leaderboards.render.json_board import JSON_NAME

MARKDOWN_NAME, CSV_NAME, HTML_NAME = "leaderboard.md", "leaderboard.csv", "index.html"
#: The files at the top of a board folder.
BOARD_FILES = (MARKDOWN_NAME, CSV_NAME, JSON_NAME, HTML_NAME)
#: The folder of the ``model-index`` blocks, one ``<label>.yaml`` each.
MODEL_INDEX_DIR = "model-index"
#: The Hub's evaluation-results files: ``hub/<label>/.eval_results/<file>.yaml``
#: (:mod:`.hub_results`); ``.eval_results`` is the folder's name in a model repository.
HUB_DIR, EVAL_RESULTS_DIR = "hub", ".eval_results"


def _is_yaml(name: str) -> bool:
    return name.endswith(".yaml") and not name.startswith(".")


def is_board_folder_path(relative: str) -> bool:
    """Whether a folder (relative to the board folder, ``/``-separated) is one a board writes
    files into or under: ``model-index``, ``hub``, ``hub/<label>``,
    ``hub/<label>/.eval_results``."""
    parts = relative.split("/")
    return (
        relative in (MODEL_INDEX_DIR, HUB_DIR)
        or (len(parts) == 2 and parts[0] == HUB_DIR and not parts[1].startswith("."))
        or (len(parts) == 3 and parts[0] == HUB_DIR and parts[2] == EVAL_RESULTS_DIR)
    ) and "" not in parts


def is_board_file(relative: str) -> bool:
    """Whether a path (relative to the board folder, ``/``-separated) is one a board writes."""
    folder, _, name = relative.rpartition("/")
    if not folder:
        return name in BOARD_FILES
    if folder == MODEL_INDEX_DIR:
        return _is_yaml(name)
    parts = folder.split("/")
    return len(parts) == 3 and is_board_folder_path(folder) and _is_yaml(name)
