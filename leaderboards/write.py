"""Write what the leaderboard publishes: a board's folder, an audit's report files.

A board's folder is written all at once (a staged folder renamed into place): a reader sees the
previous board or the new one, never half of one, and a failure leaves the previous board in
place. An existing folder is replaced only when it is empty or holds a previous board and
nothing else (its ``leaderboard.json`` says ``"generator": "muse-quant leaderboard"``, and every
file in it is one a board writes), so a mistyped ``--out`` cannot delete anything else; nor may
the board folder be, or hold, the results folder it is made from. A report's two files are
written atomically into a folder that may also hold other things (an audit's results), which are
left alone.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from harness_ext.errors import MuseQuantError
from harness_ext.files import check_writable, staged_dir, write_text_atomic
from leaderboards.audit import GENERATOR as AUDIT_GENERATOR
from leaderboards.audit import REPORT_FILES, REPORT_JSON, Audit
from leaderboards.render.audit_report import render_report
from leaderboards.render.board_layout import is_board_file, is_board_folder_path
from leaderboards.render.json_board import GENERATOR, JSON_NAME


def _written_by(path: Path, generator: str) -> bool:
    """Whether ``path`` is a JSON file whose ``generator`` is ``generator``."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))["generator"] == generator
    except (OSError, ValueError, KeyError, TypeError):
        return False


def is_board_folder(folder: Path) -> bool:
    """Whether ``folder`` may be replaced: empty, or a board this command wrote."""
    return not any(folder.iterdir()) or _written_by(folder / JSON_NAME, GENERATOR)


def _not_board_files(folder: Path, prefix: str = "") -> list[str]:
    """What a board folder holds besides a board's own files (relative paths, sorted): the
    folders a board writes (``model-index/``, ``hub/<label>/.eval_results/``) are looked into,
    never followed through a link."""
    others = []
    for entry in sorted(folder.iterdir()):
        relative = prefix + entry.name
        if is_board_folder_path(relative) and entry.is_dir() and not entry.is_symlink():
            others += _not_board_files(entry, f"{relative}/")
        elif not (entry.is_file() and is_board_file(relative)):
            others.append(relative)
    return others


def check_board_folder(out_dir: Path, results_dir: Path | None = None) -> None:
    """Refuse, before any results file is read, a board folder that cannot be written or
    replaced: the results folder itself or one holding it, a file, an unwritable place, a
    folder that is no board, or a board folder that also holds files the board did not write."""
    out_dir = Path(out_dir).absolute()
    if results_dir is not None:
        out, results = out_dir.resolve(), Path(results_dir).resolve()
        if out == results:
            raise MuseQuantError(
                f"--out {out_dir} is the results folder itself; write the board to another "
                f"folder: outside it, or a new subfolder such as {out_dir / 'board'}"
            )
        if results.is_relative_to(out):
            raise MuseQuantError(
                f"--out {out_dir} holds the results folder {results_dir}, and the board "
                "replaces its folder whole; choose a folder outside the results"
            )
    check_writable(out_dir)
    if not out_dir.exists():
        return
    if not is_board_folder(out_dir):
        raise MuseQuantError(
            f"--out {out_dir} exists and is not a muse-quant leaderboard folder; "
            "choose another folder (it is replaced only when it holds a previous board)"
        )
    others = _not_board_files(out_dir)
    if others:
        more = f" and {len(others) - 1} more" if len(others) > 1 else ""
        raise MuseQuantError(
            f"--out {out_dir} holds {others[0]}{more}, which the board did not write, and the "
            "board replaces its folder whole; move them out or choose another folder"
        )


def write_folder(out_dir: Path, files: Mapping[str, str], results_dir: Path | None = None) -> None:
    """Make ``out_dir`` hold exactly ``files`` (relative path -> UTF-8 text), atomically."""
    out_dir = out_dir.absolute()
    check_board_folder(out_dir, results_dir)
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


def is_audit_report(path: Path) -> bool:
    """Whether ``path`` is a ``report.json`` an audit wrote (so a new audit may replace it)."""
    return _written_by(path, AUDIT_GENERATOR)


def check_report_folder(out_dir: Path) -> None:
    """Refuse a folder the report cannot go into, before anything runs or is written: not a
    folder, not writable, or holding report files that an audit did not write."""
    out_dir = Path(out_dir).absolute()
    check_writable(out_dir)
    present = [name for name in REPORT_FILES if (out_dir / name).exists()]
    if present and not is_audit_report(out_dir / REPORT_JSON):
        raise MuseQuantError(
            f"--out {out_dir} holds {', '.join(present)} that muse-quant audit did not write; "
            "choose another folder"
        )


def write_report(audit: Audit, out_dir: Path) -> list[Path]:
    """Write ``report.md`` and ``report.json`` into ``out_dir`` (made if needed; anything else
    there, such as the results, is left alone), each atomically, ``report.json`` last."""
    out_dir = Path(out_dir)
    check_report_folder(out_dir)
    files = render_report(audit)
    try:
        return [write_text_atomic(out_dir / name, files[name]) for name in REPORT_FILES]
    except OSError as e:
        raise MuseQuantError(f"cannot write the report to {out_dir}: {e.strerror or e}") from None
