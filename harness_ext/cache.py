"""Where muse-quant caches what it builds: toy worlds, their zoos, quantized checkpoints."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$MUSE_QUANT_CACHE`` if set, else ``~/.cache/muse-quant``."""
    return Path(os.environ.get("MUSE_QUANT_CACHE", Path.home() / ".cache" / "muse-quant"))
