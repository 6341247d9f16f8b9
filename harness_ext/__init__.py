"""muse-quant's lm-eval extension: MUSE data, metrics, the toy world and the command line."""

__version__ = "0.1.0"
