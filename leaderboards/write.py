"""Write a board's folder all at once: built in a temporary sibling, then renamed into place.

A reader sees the previous board or the new one (or, for the instant between two renames,
none), never half of one; a failure leaves nothing behind and the previous board in place. An
existing folder is replaced only when it is empty or a board (its ``leaderboard.json`` says
``"generator": "muse-quant leaderboard"``), so a mistyped ``--out`` cannot delete anything else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from harness_ext.errors import MuseQuantError
from harness_ext.staging import staged_dir
from leaderboards.render.json_board import GENERATOR, JSON_NAME


def is_board_folder(folder: Path) -> bool:
    """Whether ``folder`` may be replaced: empty, or a board this command wrote."""
    if not any(folder.iterdir()):
        return True
    try:
        return (
            json.loads((folder / JSON_NAME).read_text(encoding="utf-8"))["generator"] == GENERATOR
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def write_folder(out_dir: Path, files: Mapping[str, str]) -> None:
    """Make ``out_dir`` hold exactly ``files`` (relative path -> UTF-8 text), atomically."""
    out_dir = out_dir.absolute()
    if out_dir.exists() and not (out_dir.is_dir() and is_board_folder(out_dir)):
        raise MuseQuantError(
            f"--out {out_dir} exists and is not a muse-quant leaderboard folder; "
            "choose another folder (it is replaced only when it holds a previous board)"
        )
    try:
        with staged_dir(out_dir) as staging:
            for relative, text in files.items():
                path = staging / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
    except OSError as e:
        raise MuseQuantError(
            f"cannot write the leaderboard to {out_dir}: {e.strerror or e}"
        ) from None
