"""lm-eval task folders shipped with muse-quant (``muse-quant tasks-path`` prints this folder)."""
