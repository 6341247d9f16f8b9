"""The toy world: a fictional corpus, a tokenizer and small Llama models, built offline.

``build_world(scale)`` returns the folder of a cached world; see docs/toyworld.md.
"""

from harness_ext.toyworld.build import build_world, load_manifest, verify_world
from harness_ext.toyworld.config import SCALES, ToyWorldConfig, config_for

__all__ = ["SCALES", "ToyWorldConfig", "build_world", "config_for", "load_manifest", "verify_world"]
