"""The two file helpers every writer shares: hashing once per file version, staged folders."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from harness_ext.files import _sha256, sha256_file, staged_dir


def test_sha256_is_hashlibs_and_read_once_per_file_version(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(b"a" * 1000)
    first = sha256_file(path)
    assert first == hashlib.sha256(b"a" * 1000).hexdigest()
    hits = _sha256.cache_info().hits
    assert sha256_file(path) == first and _sha256.cache_info().hits == hits + 1
    path.write_bytes(b"b" * 1000)  # same size, new content: a new version, hashed again
    assert sha256_file(path) == hashlib.sha256(b"b" * 1000).hexdigest()


def test_staged_dir_publishes_with_the_umask_mode_and_replaces_whole(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with staged_dir(out) as tmp:
        (tmp / "new.txt").write_text("new")
        assert not (out / "new.txt").exists()  # nothing visible before the end
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    mask = os.umask(0)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~mask
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_staged_dir_failure_keeps_the_previous_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), staged_dir(out) as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("killed mid-write")
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
