"""muse-quant's lm-eval model and what it loads: checkpoints, adapters, precisions, provenance.

``import model_wrappers.muse_model`` registers ``--model muse`` with lm-eval (``muse-quant eval``
does it for you); ``model_wrappers.muse_model.muse_model(args)`` builds one from Python. Imported
on first use, so that the loading modules do not pull in lm-eval's HF model.
"""
