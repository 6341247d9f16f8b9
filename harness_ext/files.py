"""Files, one mechanism each: hashing, the writability probe, atomic files and staged folders.

Everything muse-quant writes goes through here, so that a killed or failing run leaves the
previous output (or nothing) in place, never half of one, and a command refuses an output it
cannot write before it starts any work.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from harness_ext.errors import MuseQuantError

# --------------------------------------------------------------------------- hashing


def sha256_file(path: Path) -> str:
    """sha256 of a file, read once per file version in a process.

    Cell keys, provenance and manifests hash the same multi-GB weight files again and again (a
    sweep, then the audits that reuse its cells); a file whose inode, size and times are
    unchanged is not read twice.
    """
    path = Path(path).resolve()
    stat = path.stat()
    return _sha256(path, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def file_hashes(root: Path, files: list[Path]) -> dict[str, str]:
    """``{path relative to root: sha256}``, sorted by path."""
    return {f.relative_to(root).as_posix(): sha256_file(f) for f in sorted(files)}


@functools.lru_cache(maxsize=4096)
def _sha256(path: Path, *version: int) -> str:
    """``version`` (inode, size, mtime, ctime) is only the cache key: any rewrite changes it."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- the probe


def check_writable(out: Path, flag: str = "--out") -> None:
    """Refuse, before any work, an output folder that is a file or that cannot be written.

    A file is created and removed in the folder itself when it exists (results and reports go
    inside it) and in its nearest existing parent (staged folders are made beside it): a real
    probe, right for root and for read-only mounts, where permission bits say nothing.
    """
    out = Path(out).absolute()
    if out.exists() and not out.is_dir():
        raise MuseQuantError(f"{flag} {out} is a file; give a folder path")
    parent = next(p for p in out.parents if p.exists())
    for folder in (out, parent) if out.exists() else (parent,):
        if not folder.is_dir():
            raise MuseQuantError(
                f"{flag} {out}: cannot write there, {folder} is not a folder; choose another"
            )
        try:
            tempfile.TemporaryFile(dir=folder).close()
        except OSError as e:
            raise MuseQuantError(
                f"{flag} {out}: cannot write in {folder} ({e.strerror or e}); choose a "
                "writable folder"
            ) from None


def check_apart(
    out: Path, flag: str, inputs: Iterable[tuple[str, object]], *, holding: bool = False
) -> None:
    """Refuse an output folder that is, or lies inside, a folder it reads (``inputs``: each
    ``(what the user calls it, its path or None)``; hub ids and files are skipped), and with
    ``holding`` one that holds an input folder: its files would land among the checkpoint's
    or the data's (and a toy world that finds files it did not write rebuilds itself)."""
    output = Path(out).expanduser().absolute().resolve()
    for name, given in inputs:
        folder = Path(str(given)).expanduser() if given else None
        if folder is None or not folder.is_dir():
            continue
        folder = folder.resolve()
        if output.is_relative_to(folder) or (holding and folder.is_relative_to(output)):
            where = ("is" if output == folder else "is inside" if output.is_relative_to(folder)
                     else "holds")  # fmt: skip
            raise MuseQuantError(
                f"{flag} {out} {where} {name} {given}; write outside the models and data it reads"
            )


# --------------------------------------------------------------------------- atomic files


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``path`` through a temporary sibling renamed into place (the umask's permissions):
    a reader sees the previous file or the new one, never part of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would make the output private
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


# --------------------------------------------------------------------------- staged folders


#: The hidden siblings :func:`staged_dir` fills and retires: ``.<name>.building-XXXXXXXX`` (not
#: yet published, maybe complete) and ``.<name>.old-PID`` (being replaced).
STAGING = re.compile(r"^\..+\.(?:building|old)-\w+$")


def is_staging(name: str) -> bool:
    """Whether a folder name is one of :func:`staged_dir`'s unpublished siblings."""
    return STAGING.match(name) is not None


@contextlib.contextmanager
def staged_dir(out: Path, *, replace: bool = True) -> Iterator[Path]:
    """Yield an empty hidden sibling of ``out`` to fill; on success it becomes ``out``.

    ``replace=True``: the previous ``out`` is replaced (and put back if the final rename
    fails), and a sibling left by a killed run is removed first. ``replace=False`` (caches that
    concurrent writers share): when ``out`` exists by then, the first complete copy is kept and
    this one discarded. On failure nothing is published.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if replace:  # a single writer: a sibling still there was left by a killed run
        for stale in out.parent.glob(f".{out.name}.building-*"):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.building-"))
    try:
        yield tmp
        tmp.chmod(0o777 & ~_umask())  # mkdtemp's 0700 would make the output private
        if not replace:
            with contextlib.suppress(OSError):  # another writer published first
                os.rename(tmp, out)
            return
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
