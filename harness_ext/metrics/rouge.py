"""ROUGE-L F1 exactly as MUSE scores VerbMem and KnowMem (docs/tasks.md).

``rouge_score``'s default tokenizer lowercases, turns every run of characters outside ``[a-z0-9]``
into a separator (so punctuation and non-ASCII letters vanish) and, with ``use_stemmer=False``,
keeps words as they are: "running" and "run" are different tokens.
"""

from __future__ import annotations

from functools import cache
from typing import Any


@cache
def _scorer() -> Any:
    """One scorer for the process, built on first use: ``rouge_score`` imports nltk (~2 s)."""
    from rouge_score.rouge_scorer import RougeScorer

    return RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l_f1(reference: str, candidate: str) -> float:
    """ROUGE-L F1 of ``candidate`` against ``reference``, in [0, 1] (callers report x 100).

    F1 is symmetric, but the order is kept as ``rouge_score`` names it (target, prediction) so
    that precision and recall mean the usual thing if anyone reads them from the same scorer.
    """
    return float(_scorer().score(reference, candidate)["rougeL"].fmeasure)
