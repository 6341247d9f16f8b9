"""A run's inputs and output, checked before any work: the target, the data, the output folder.

Every refusal is one :class:`MuseQuantError` line naming the flag (``--model``, ``--data``,
``--out``) and how to fix it. ``--overwrite`` replaces only a folder this command made: one whose
``unlearn.json`` says it is a run, holding nothing but the files that run wrote.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness_ext.errors import MuseQuantError
from harness_ext.files import check_writable
from harness_ext.muse_layout import split_path
from muse_quant.unlearning.config import UnlearnConfig

RECORD = "unlearn.json"
#: ``unlearn.json``'s ``kind``: what marks a folder as a run this command wrote.
KIND = "muse-quant unlearning run"


def check_inputs(
    target: str, data: Path, out: Path, config: UnlearnConfig, overwrite: bool
) -> None:
    """Refuse a missing model or data folder, data early stopping cannot score, an output that
    is or holds an input, and an output that may not be written or replaced."""
    local = Path(target).expanduser()
    if local.exists() or target.startswith((".", "/", "~")) or target.count("/") != 1:
        _check_model_folder(target, local, config.max_length)
    if not data.is_dir():
        what = "is a file" if data.exists() else "no such folder"
        raise MuseQuantError(f"--data {data}: {what}; give a MUSE-layout data folder")
    _check_early_stopping(data, config)
    check_writable(out)
    for flag, folder in (("--model", local), ("--data", data)):
        if folder.exists() and _overlap(out, folder):
            raise MuseQuantError(
                f"--out {out} and {flag} {folder} overlap (one is inside the other); write the "
                "run to a folder of its own"
            )
    _check_out(out, overwrite)


def _check_model_folder(target: str, folder: Path, max_length: int) -> None:
    if not folder.is_dir():
        what = "is a file" if folder.exists() else "no such folder (nor a hub id: owner/name)"
        raise MuseQuantError(f"--model {target}: {what}; give a model folder")
    config = folder / "config.json"
    if not config.is_file():
        raise MuseQuantError(
            f"--model {target}: no config.json in {folder}; give a transformers model folder"
        )
    try:
        positions = json.loads(config.read_text(encoding="utf-8")).get("max_position_embeddings")
    except (OSError, ValueError, AttributeError):
        raise MuseQuantError(f"--model {target}: {config} is not a JSON object") from None
    if isinstance(positions, int) and max_length > positions:
        raise MuseQuantError(
            f"--max-length {max_length}: longer than the {positions} positions the model was "
            "trained for (max_position_embeddings); give at most that"
        )


def _check_early_stopping(data: Path, config: UnlearnConfig) -> None:
    """Early stopping scores forget VerbMem (and KnowMem, with ``stop_knowmem``): the data folder
    must hold what it scores, or the run would silently never stop early."""
    needed = []
    if config.check_every:
        needed.append(("verbmem", "forget", "--check-every"))
    if config.check_every and config.stop_knowmem is not None:
        needed += [("knowmem", s, "--stop-knowmem") for s in ("forget_qa", "forget_qa_icl")]
    for folder, split, flag in needed:
        path = split_path(data, folder, split)
        if not path.is_file():
            raise MuseQuantError(
                f"{flag}: {path} is missing, and early stopping scores it; add it, or leave "
                f"{flag} out"
            )


def _overlap(a: Path, b: Path) -> bool:
    a, b = a.resolve(), b.resolve()
    return a.is_relative_to(b) or b.is_relative_to(a)


def _check_out(out: Path, overwrite: bool) -> None:
    if not out.is_dir() or not any(out.iterdir()):
        return
    record = _run_record(out / RECORD)
    if not overwrite:
        what = "another unlearning run" if record is not None else "other files"
        raise MuseQuantError(f"--out {out} already holds {what}; pass --overwrite to replace it")
    present = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if not p.is_dir())
    present = present or sorted(p.name for p in out.iterdir())  # only (empty) folders
    if record is None:
        raise MuseQuantError(
            f"--out {out} holds {_some(present)} but no unlearning run ({RECORD} of this "
            "command); --overwrite replaces only a run: choose another folder"
        )
    written = record.get("files")
    others = [] if not isinstance(written, list) else [p for p in present if p not in written]
    if others:
        raise MuseQuantError(
            f"--out {out} holds {_some(others)}, which its run did not write; --overwrite "
            "replaces the folder whole: move them out or choose another folder"
        )


def _run_record(path: Path) -> dict[str, Any] | None:
    """``unlearn.json`` when it is a run's (its ``kind``), else None."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("kind") == KIND else None


def _some(names: list[str]) -> str:
    return names[0] + (f" and {len(names) - 1} more" if len(names) > 1 else "")


def written_files(folder: Path) -> list[str]:
    """The files of a staged run (relative paths, sorted), for ``unlearn.json``'s ``files``."""
    return sorted(
        [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()] + [RECORD]
    )
