"""The files a board is made of: every renderer's output under its path in the board folder."""

from __future__ import annotations

from leaderboards.render.csv_table import render_csv
from leaderboards.render.html_page import render_html
from leaderboards.render.json_board import JSON_NAME, render_json
from leaderboards.render.markdown import render_markdown
from leaderboards.render.model_index import render_model_index
from leaderboards.scores import Board

MODEL_INDEX_DIR = "model-index"


def render_all(board: Board) -> dict[str, str]:
    """``{path relative to the output folder: text}`` for every file a board is made of."""
    files = {
        "leaderboard.md": render_markdown(board),
        "leaderboard.csv": render_csv(board),
        JSON_NAME: render_json(board),
        "index.html": render_html(board),
    }
    for name, text in render_model_index(board).items():
        files[f"{MODEL_INDEX_DIR}/{name}"] = text
    return files
