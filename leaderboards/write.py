"""Write a board's folder all at once: built in a temporary sibling, then renamed into place.

A reader sees the previous board or the new one (or, for the instant between two renames,
none), never half of one; a failure leaves nothing behind and the previous board in place. An
existing folder is replaced only when it is empty or a board (its ``leaderboard.json`` says
``"generator": "muse-quant leaderboard"``), so a mistyped ``--out`` cannot delete anything else.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from harness_ext.errors import MuseQuantError
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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_folder(out_dir: Path, files: Mapping[str, str]) -> None:
    """Make ``out_dir`` hold exactly ``files`` (relative path -> UTF-8 text), atomically."""
    out_dir = out_dir.absolute()
    if out_dir.exists() and not (out_dir.is_dir() and is_board_folder(out_dir)):
        raise MuseQuantError(
            f"--out {out_dir} exists and is not a muse-quant leaderboard folder; "
            "choose another folder (it is replaced only when it holds a previous board)"
        )
    staging = old = None
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
        for relative, text in files.items():
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        staging.chmod(0o777 & ~_umask())
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            out_dir.rename(old / "board")
        staging.rename(out_dir)
        staging = None
    except OSError as e:
        if old is not None and not out_dir.exists():
            (old / "board").rename(out_dir)
        raise MuseQuantError(
            f"cannot write the leaderboard to {out_dir}: {e.strerror or e}"
        ) from None
    finally:
        for leftover in (staging, old):
            if leftover is not None:
                shutil.rmtree(leftover, ignore_errors=True)
