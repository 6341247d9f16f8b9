"""``leaderboard.json``: the whole board in one documented schema (docs/leaderboard.md).

The dataclasses of :mod:`leaderboards.robustness` are the schema: field names become keys, n/a
becomes null, and nothing depends on when the board was made, so the same results files give
the same bytes.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from harness_ext import __version__
from leaderboards.intervals import DESCRIPTION as INTERVALS
from leaderboards.ranking import RANKING_RULE
from leaderboards.scores import CRITERIA, Board
from leaderboards.verdicts import VERDICT_RULE

SCHEMA_VERSION = 1
#: The ``generator`` value that marks a folder as a board this command may replace.
GENERATOR = "muse-quant leaderboard"
JSON_NAME = "leaderboard.json"


def board_to_dict(board: Board) -> dict[str, Any]:
    """The JSON document of a board (schema :data:`SCHEMA_VERSION`)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "generator": GENERATOR,
        "muse_quant_version": __version__,
        "options": asdict(board.options),
        "ranking_rule": RANKING_RULE,
        "verdict_rule": VERDICT_RULE,
        "intervals": INTERVALS,
        "criteria": dict(CRITERIA),
        "sources": list(board.sources),
        "warnings": list(board.warnings),
        "corpora": [asdict(corpus) for corpus in board.corpora],
    }


def render_json(board: Board) -> str:
    return json.dumps(board_to_dict(board), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
