"""muse-quant's lm-eval models. Importing the package registers ``--model muse`` with lm-eval."""

from model_wrappers.muse_lm import MuseLM

__all__ = ["MuseLM"]
