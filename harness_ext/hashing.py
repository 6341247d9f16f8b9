"""sha256 of files, computed once per file version in a process.

Cell keys, provenance and manifests hash the same multi-GB weight files again and again (a sweep,
then the audits that reuse its cells); a file whose inode, size and times are unchanged is not
read twice.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path


def sha256_file(path: Path) -> str:
    path = Path(path).resolve()
    stat = path.stat()
    return _sha256(path, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


@functools.lru_cache(maxsize=4096)
def _sha256(path: Path, *version: int) -> str:
    """``version`` (inode, size, mtime, ctime) is only the cache key: any rewrite changes it."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
