"""Quantized checkpoints cached on disk: computed once per key across processes, published whole.

GPTQ checkpoints and GGUF files take seconds to hours to compute and are a pure function of the
full-precision weights, the configuration and the library's version, so they are cached under
``$MUSE_QUANT_CACHE/quantized/`` keyed by those.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness_ext.cache import cache_root
from harness_ext.files import staged_dir
from harness_ext.locks import wait_lock

log = logging.getLogger(__name__)

#: Written last into a cached checkpoint: its key, and the sign that it is complete.
KEY_FILE = "muse_quant_key.json"


def cached_checkpoint(key: dict[str, Any], write: Callable[[Path], None]) -> tuple[Path, bool]:
    """The folder cached under ``key`` (written by ``write`` on a miss) and whether it was a hit.

    A miss writes into a staged folder published whole, so an interrupted write never leaves a
    half checkpoint behind. The entry's lock makes it one computation across processes and
    machines sharing the cache: a second process needing it waits, then reads the first's.
    """
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    folder = cache_root() / "quantized" / digest
    if (folder / KEY_FILE).is_file():
        return folder, True

    def note(seconds: float) -> None:
        log.warning("waiting for another process quantizing %s (%.0f s)", folder, seconds)

    with wait_lock(folder.with_name(f"{folder.name}.lock"), note):
        if (folder / KEY_FILE).is_file():  # the process we waited for wrote it
            return folder, True
        with staged_dir(folder, replace=False) as tmp:
            write(tmp)
            (tmp / KEY_FILE).write_text(json.dumps(key, indent=1, sort_keys=True))
    return folder, False
