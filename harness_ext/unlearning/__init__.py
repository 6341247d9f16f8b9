"""Unlearning recipes: GA and NPO, each alone or with a GDR/KLR retain term, full or LoRA.

Each method is a small ``transformers.Trainer`` subclass that only says its loss
(:mod:`.trainers`); the recipe (:mod:`.recipe`) loads the target, trains, and saves a checkpoint or
a peft adapter with an ``unlearn.json`` that records every hyperparameter, seed and data hash.
"""

from harness_ext.unlearning.config import UnlearnConfig
from harness_ext.unlearning.recipe import unlearn

__all__ = ["UnlearnConfig", "unlearn"]
