"""The functions the MUSE task YAMLs name, each a one-line call into ``harness_ext.evaluation``."""

from __future__ import annotations

from typing import Any

from harness_ext import evaluation


def muse_dataset(**kwargs: Any) -> Any:
    """``custom_dataset``: the task's documents (local folder via ``muse_data``, else the hub)."""
    return evaluation.muse_dataset(**kwargs)


def process_generation(doc: dict, results: list[str]) -> dict[str, float]:
    """VerbMem / KnowMem: ROUGE-L F1 x 100 of the generation against the target."""
    return evaluation.score_generation(doc, results)


def process_privleak(doc: dict, results: list[Any]) -> dict[str, dict]:
    """PrivLeak: every membership-inference score of the text, tagged forget/holdout."""
    return evaluation.score_privleak(doc, results)


def auc(items: list[dict]) -> float:
    """Aggregation: forget-vs-holdout AUC (MUSE's direction)."""
    return evaluation.aggregate_auc(items)


def privleak(items: list[dict]) -> float:
    """Aggregation: PrivLeak, the headline AUC normalized by AUC_retrain."""
    return evaluation.aggregate_privleak(items)
