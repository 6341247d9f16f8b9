"""The toy world: a fictional corpus, a tokenizer and small Llama models, built offline.

``muse_quant.toyworld.build.build_world(scale)`` returns the folder of a cached world; its method
zoo is :mod:`.zoo`. docs/toyworld.md says what is in it and why.
"""
