"""Write an output folder all at once: build it in a hidden sibling, then rename it into place.

A killed or failing run leaves the previous folder (or nothing) where the output goes, never a
half-written one; the hidden sibling is removed on failure, or by the next run if it was killed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from harness_ext.errors import MuseQuantError


def check_writable(out: Path, flag: str = "--out") -> None:
    """Refuse a path that is a file, or whose parent we cannot create or write into."""
    if out.exists() and not out.is_dir():
        raise MuseQuantError(f"{flag} {out} is a file; give a folder path")
    probe = next((p for p in (out.parent, *out.parent.parents) if p.exists()), None)
    if probe is None or not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise MuseQuantError(f"cannot write to {out.parent}; choose a writable {flag} folder")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def staged_dir(out: Path) -> Iterator[Path]:
    """Yield an empty hidden sibling of ``out``; on success it replaces ``out`` (whose previous
    content is put back if the final rename fails)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.building-*"):  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.building-"))
    try:
        yield tmp
        tmp.chmod(0o777 & ~_umask())  # mkdtemp's 0700 would make the output private
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        try:
            os.replace(tmp, out)
        except OSError:
            if old is not None:
                os.replace(old, out)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
