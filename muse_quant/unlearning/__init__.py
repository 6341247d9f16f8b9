"""Unlearning recipes: GA and NPO, each alone or with a GDR/KLR retain term, full or LoRA.

Each method is a small ``transformers.Trainer`` subclass that only says its loss, registered by
name (:mod:`.trainers`); the recipe (:mod:`.recipe`, ``unlearn``) loads the target, trains, and
saves a checkpoint or a peft adapter with an ``unlearn.json`` that records every hyperparameter,
seed and data hash; :mod:`.config` holds ``UnlearnConfig``.
"""
