"""The per-token request: how a PrivLeak document asks the ``muse`` model for token statistics.

lm-eval's request types return one float per text, but MUSE's membership-inference scores need
every token's log-prob (and the vocabulary moments for Min-K%++). So a PrivLeak task sends an
ordinary ``loglikelihood_rolling`` request whose document carries :data:`TOKEN_STATS_FIELD`; the
``muse`` model answers it with a :class:`ScoredText`: a float (the text's summed log-prob, a valid
rolling log-likelihood) that also carries the :class:`TokenStats`. A stock model answers with a
plain float, which the task turns into a one-line error naming ``--model muse``.

This module is the whole contract between the tasks (``harness_ext.evaluation``) and the model
(``model_wrappers.muse_lm``); neither imports the other.
"""

from __future__ import annotations

from typing import Any

from harness_ext.metrics.mia import TokenStats

#: Document field that marks a request as wanting token statistics.
TOKEN_STATS_FIELD = "muse_token_stats"


class ScoredText(float):
    """A rolling log-likelihood (the float) with the token statistics behind it (``.stats``).

    Being a float keeps lm-eval's bookkeeping (filters, samples file, caching) working unchanged:
    the samples file logs the summed log-prob, the task reads ``.stats``.
    """

    stats: TokenStats

    def __new__(cls, stats: TokenStats) -> ScoredText:
        obj = super().__new__(cls, float(stats.logprobs.sum()))
        obj.stats = stats
        return obj

    def __reduce__(self) -> tuple:
        return (ScoredText, (self.stats,))


def wants_token_stats(doc: Any) -> bool:
    """Whether a request's document asks for token statistics."""
    return isinstance(doc, dict) and bool(doc.get(TOKEN_STATS_FIELD))


def describe(task_name: str | None, doc_id: int | None, doc: Any) -> str:
    """A one-line name for a document in error messages: task, doc id and, if known, its source."""
    where = f"{task_name} doc {doc_id}"
    if isinstance(doc, dict) and doc.get("source"):
        where += f" ({doc['source']} record {doc.get('index')})"
    return where
