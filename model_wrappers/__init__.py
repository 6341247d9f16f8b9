"""muse-quant's lm-eval model and what it loads: checkpoints, adapters, precisions, provenance.

``import model_wrappers.muse_lm`` registers ``--model muse`` with lm-eval (``muse-quant eval``
does it for you); ``model_wrappers.MuseLM`` is the same class, imported on first use so that the
loading modules do not pull in lm-eval.
"""

from typing import Any

__all__ = ["MuseLM"]


def __getattr__(name: str) -> Any:
    if name == "MuseLM":
        from model_wrappers.muse_lm import MuseLM  # lm-eval's HF model loads slowly

        return MuseLM
    raise AttributeError(f"module 'model_wrappers' has no attribute {name!r}")
