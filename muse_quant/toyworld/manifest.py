"""A toy world's or zoo's ``manifest.json``: what it was built from, and every file's sha256."""

from __future__ import annotations

import json
from pathlib import Path

from harness_ext.files import file_hashes

MANIFEST = "manifest.json"


def folder_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file below ``root`` except the manifest itself."""
    files = [p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST]
    return file_hashes(root, files)


def load_manifest(world: Path) -> dict | None:
    """The manifest (``{}`` if unreadable), or None when the folder has none."""
    path = Path(world) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}


def verify_world(world: Path, manifest: dict) -> list[str]:
    """The files whose sha256 no longer matches the manifest (missing or extra files included)."""
    recorded = manifest.get("files", {})
    actual = folder_hashes(world)
    return sorted(k for k in recorded.keys() | actual.keys() if recorded.get(k) != actual.get(k))
