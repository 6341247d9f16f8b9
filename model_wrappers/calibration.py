"""Calibration texts for calibrated quantizers (GPTQ, AWQ): generic or retain text, never forget.

Resolved once per checkpoint and precision (a sweep cell's key and the loader use the same
:class:`Calibration`), so the texts are read once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness_ext.errors import MuseQuantError, first_line
from harness_ext.muse_data import CORPORA, load_split
from harness_ext.muse_layout import read_split, split_path


@dataclass(frozen=True)
class Calibration:
    """Texts a calibrated quantizer (GPTQ, AWQ) sees, with where they came from and their hash."""

    texts: tuple[str, ...]
    source: str

    @property
    def sha256(self) -> str:
        """sha256 of the texts' JSON list: the calibration set's identity."""
        return hashlib.sha256(json.dumps(list(self.texts)).encode()).hexdigest()

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "n_texts": len(self.texts), "sha256": self.sha256}


#: MUSE layout folders whose texts must never calibrate (forget text, and the evaluation sets).
_EVAL_CONFIGS = ("verbmem", "knowmem", "privleak")


def resolve_calibration(
    calibration: list[str] | str | None,
    model_folder: Path,
    limit: int | None = None,
    model: str | None = None,
) -> Calibration:
    """Calibration texts (the first ``limit``): generic or retain text, never forget. ``model``:
    the model as the user named it (a GGUF file's folder is in the cache), for the error."""
    if isinstance(calibration, (list, tuple)):
        texts = [str(t) for t in calibration]
        source = "texts given by the caller"
    elif calibration is None:
        world = toy_world_root(model_folder)
        if world is None:
            raise MuseQuantError(
                f"GPTQ and AWQ need calibration texts and none is known for "
                f"{model or model_folder} (it is in no toy world): pass "
                "calibration=<MUSE data folder> (its raw/retain1), calibration=news|books "
                "(MUSE's raw/retain1 from the hub) or calibration=<JSON list of generic texts>"
            )
        texts, source = _calibration_from(world_calibration(world))
    else:
        texts, source = _calibration_from(str(calibration))
    if not texts:
        raise MuseQuantError(f"calibration {source}: no texts")
    return Calibration(tuple(texts[:limit]), source)


def toy_world_root(model_folder: Path) -> Path | None:
    """The toy world a model lives in (its folder holds ``manifest.json`` and ``data/``, and a
    toy scale's ``pretrain/`` too), or None."""
    for parent in list(model_folder.parents)[:4]:
        if (parent / "manifest.json").is_file() and (parent / "data" / "raw").is_dir():
            return parent
    return None


def world_calibration(world: Path) -> str:
    """What a world's models calibrate on by default, as ``calibration=`` takes it: a toy
    world's generic pretraining texts; a world on a pretrained base has none, and gives its data
    folder (its retain text)."""
    generic = world / "pretrain" / "generic.json"
    return str(generic) if generic.is_file() else str(world / "data")


def _calibration_from(spec: str) -> tuple[list[str], str]:
    path = Path(spec).expanduser().resolve()
    if path.is_dir():
        records = read_split(path, "raw", "retain1")
        return [r["text"] for r in records], str(split_path(path, "raw", "retain1"))
    if path.is_file():
        if path.stem.startswith("forget") or path.parent.name in _EVAL_CONFIGS:
            raise MuseQuantError(
                f"calibration={spec}: calibrating on forget or evaluation text would leak it "
                "into the quantized weights; use generic text or raw/retain1"
            )
        return _read_texts(path), str(path)
    if spec in CORPORA:
        records, where = load_split(spec, "raw", "retain1", None)
        return [r["text"] for r in records], where
    raise MuseQuantError(
        f"calibration={spec}: not a file, a MUSE data folder or a corpus ({', '.join(CORPORA)})"
    )


def _read_texts(path: Path) -> list[str]:
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise MuseQuantError(f"calibration {path}: not a JSON file ({first_line(e)})") from None
    if not isinstance(items, list) or not all(
        isinstance(x, str) or (isinstance(x, dict) and isinstance(x.get("text"), str))
        for x in items
    ):
        raise MuseQuantError(f'calibration {path}: expected a JSON list of strings or {{"text"}}')
    return [x if isinstance(x, str) else x["text"] for x in items]
