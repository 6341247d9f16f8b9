"""The files a board is made of: every renderer's output under its path in the board folder."""

from __future__ import annotations

from leaderboards.render.board_layout import CSV_NAME, HTML_NAME, MARKDOWN_NAME, MODEL_INDEX_DIR
from leaderboards.render.csv_table import render_csv
from leaderboards.render.html_page import render_html
from leaderboards.render.hub_results import render_hub_results
from leaderboards.render.json_board import JSON_NAME, render_json
from leaderboards.render.markdown import render_markdown
from leaderboards.render.model_index import render_model_index
from leaderboards.scores import Board

__all__ = ["MODEL_INDEX_DIR", "render_all"]


def render_all(board: Board) -> dict[str, str]:
    """``{path relative to the output folder: text}`` for every file a board is made of."""
    files = {
        MARKDOWN_NAME: render_markdown(board),
        CSV_NAME: render_csv(board),
        JSON_NAME: render_json(board),
        HTML_NAME: render_html(board),
    }
    for name, text in render_model_index(board).items():
        files[f"{MODEL_INDEX_DIR}/{name}"] = text
    files.update(render_hub_results(board))
    return files
