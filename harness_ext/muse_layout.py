"""The MUSE data layout (docs/tasks.md): the configs, splits and fields, on disk and on the hub.

One folder is one corpus: ``DIR/<config>/<split>.json``, each a JSON list of records. The toy world
writes this layout and the tasks read it, so both go through this module.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from harness_ext.errors import MuseQuantError
from harness_ext.files import write_text_atomic

#: config -> split -> the fields each record of that split must have.
LAYOUT: dict[str, dict[str, tuple[str, ...]]] = {
    "verbmem": {"forget": ("prompt", "gt")},
    "knowmem": {
        "forget_qa": ("question", "answer"),
        "retain_qa": ("question", "answer"),
        "forget_qa_icl": ("question", "answer"),
        "retain_qa_icl": ("question", "answer"),
    },
    "privleak": {"forget": ("text",), "retain": ("text",), "holdout": ("text",)},
    "raw": {"forget": ("text",), "holdout": ("text",), "retain1": ("text",), "retain2": ("text",)},
}

#: Splits whose records are plain strings on disk (MUSE's load_data.py); ``{"text"}`` accepted too.
TEXT_CONFIGS = ("privleak", "raw")


def split_path(root: str | os.PathLike, config: str, split: str) -> Path:
    return Path(root) / config / f"{split}.json"


def write_split(root: str | os.PathLike, config: str, split: str, records: list[Any]) -> Path:
    """Write one split atomically, pretty and deterministic."""
    text = json.dumps(records, ensure_ascii=False, indent=1) + "\n"
    return write_text_atomic(split_path(root, config, split), text)


def read_split(root: str | os.PathLike, config: str, split: str) -> list[dict[str, str]]:
    """Read and validate one split; records come back as dicts (``{"text": ...}`` for text)."""
    if config not in LAYOUT or split not in LAYOUT[config]:
        known = ", ".join(f"{c}/{s}" for c in LAYOUT for s in LAYOUT[c])
        raise MuseQuantError(f"unknown MUSE split {config}/{split}; known: {known}")
    path = split_path(root, config, split)
    if not path.is_file():
        raise MuseQuantError(
            f"{path}: missing; a MUSE data folder needs {config}/{split}.json "
            "(docs/tasks.md describes the layout)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MuseQuantError(
            f"{path}: not valid UTF-8 JSON ({e}); rewrite or re-download it"
        ) from e
    if not isinstance(data, list):
        raise MuseQuantError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    if not data:
        raise MuseQuantError(f"{path}: split is empty; it needs at least one record")
    fields = LAYOUT[config][split]
    records = []
    for i, rec in enumerate(data):
        if isinstance(rec, str) and fields == ("text",):
            rec = {"text": rec}
        if not isinstance(rec, dict):
            raise MuseQuantError(f"{path}: record {i} is {type(rec).__name__}, expected an object")
        missing = [k for k in fields if not isinstance(rec.get(k), str)]
        if missing:
            raise MuseQuantError(
                f"{path}: record {i} lacks string field(s) {', '.join(missing)} "
                f"(each record needs {', '.join(fields)})"
            )
        records.append({k: rec[k] for k in fields})
    return records
