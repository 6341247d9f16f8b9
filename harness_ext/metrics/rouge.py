"""ROUGE-L F1 exactly as MUSE scores VerbMem and KnowMem (docs/tasks.md).

MUSE uses ``rouge_score``'s ``RougeScorer(["rougeL"], use_stemmer=False)``. Its default tokenizer
lowercases, turns every run of characters outside ``[a-z0-9]`` into a separator (so punctuation
and non-ASCII letters vanish) and keeps words as they are ("running" and "run" differ); ROUGE-L
is the longest common subsequence of the two token lists, P = LCS / len(candidate),
R = LCS / len(reference), F1 = 2PR / (P + R), and 0 when either side has no token. Written here
from that definition because ``rouge_score`` imports nltk (about 2 s of every evaluation's
start-up); tests/test_metrics.py checks it against ``rouge_score`` itself.
"""

from __future__ import annotations

import re

_SEPARATORS = re.compile(r"[^a-z0-9]+")


def rouge_tokens(text: str) -> list[str]:
    """``rouge_score``'s default tokens of ``text`` (no stemming)."""
    return _SEPARATORS.sub(" ", text.lower()).split()


def _lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence (one row of the table at a time)."""
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0]
        for j, other in enumerate(b):
            current.append(previous[j] + 1 if token == other else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l_f1(reference: str, candidate: str) -> float:
    """ROUGE-L F1 of ``candidate`` against ``reference``, in [0, 1] (callers report x 100)."""
    target, prediction = rouge_tokens(reference), rouge_tokens(candidate)
    if not target or not prediction:
        return 0.0
    lcs = _lcs_length(target, prediction)
    precision, recall = lcs / len(prediction), lcs / len(target)
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)
