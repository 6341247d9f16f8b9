"""Cross-process locks: one writer per sweep cell, one computation per cache entry.

Two sweeps (or a sweep and an audit, or the workers of a cluster) may share a results folder and
a cache. A lock is an OS file lock (``filelock``: ``fcntl.flock`` on Unix) on a file beside what
it guards. The operating system releases it when its process dies, however it dies, so a lock
left by a killed process is taken over by the next one that asks, with nothing to clean up. The
lock files themselves stay (empty markers, meaningless when unlocked). On a shared filesystem the
locks work where the filesystem supports ``flock`` across machines (NFSv4, Lustre, GPFS, CephFS
do; docs/sweep.md).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from filelock import FileLock, Timeout

#: How long a waiting process sleeps between notes that it is still waiting.
NOTE_EVERY_S = 60.0


@contextlib.contextmanager
def try_lock(path: Path) -> Iterator[bool]:
    """Hold the lock at ``path`` if nobody does: yields True (held until the block ends) or
    False (another process holds it; nothing is waited for)."""
    lock = _file_lock(path)
    try:
        lock.acquire()
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


@contextlib.contextmanager
def wait_lock(path: Path, note: Callable[[float], None] | None = None) -> Iterator[None]:
    """Hold the lock at ``path``, waiting for it as long as it takes; ``note(seconds waited)``
    is called when the wait starts and then every minute, so a waiting process says so."""
    lock = _file_lock(path)
    started = time.monotonic()
    noted = None
    while True:
        try:
            lock.acquire()
            break
        except Timeout:
            waited = time.monotonic() - started
            if note is not None and (noted is None or waited - noted >= NOTE_EVERY_S):
                note(waited)
                noted = waited
            time.sleep(0.2)
    try:
        yield
    finally:
        lock.release()


def _file_lock(path: Path) -> FileLock:
    """A lock on ``path`` that never waits by itself (its folder made if needed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path), timeout=0)
