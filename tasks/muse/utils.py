"""The functions the MUSE task YAMLs name, each a one-line call into ``harness_ext.evaluation``."""

from __future__ import annotations

from typing import Any

from lm_eval.api.task import ConfigurableTask

from harness_ext import evaluation
from harness_ext.errors import one_line_when_uncaught

one_line_when_uncaught()  # plain lm_eval: our input errors as one line, exit 2


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


class PrivLeakTask(ConfigurableTask):
    """PrivLeak's task: ``--limit N`` scores N forget *and* N holdout texts.

    lm-eval's limit takes the first N documents; PrivLeak's documents alternate forget and holdout
    texts, so the first 2N are N of each (fewer where a set is smaller).
    """

    def __init__(self, config: dict[str, Any] | None = None, **kwargs: Any) -> None:
        # lm-eval hands a Python task its whole YAML, `class` key included, which TaskConfig refuses
        config = {k: v for k, v in (config or {}).items() if k != "class"}
        super().__init__(config=config, **kwargs)

    def doc_iterator(self, *, limit: int | None = None, **kwargs: Any) -> Any:
        return super().doc_iterator(limit=evaluation.privleak_documents(limit), **kwargs)

    def build_all_requests(self, *, limit: int | None = None, **kwargs: Any) -> None:
        # lm-eval slices its requests to `limit` after building them from `doc_iterator(limit)`;
        # build them all, then keep those of the documents our iterator yields for this limit.
        super().build_all_requests(limit=None, **kwargs)
        if limit is not None:
            where = {k: kwargs[k] for k in ("rank", "world_size", "samples") if k in kwargs}
            kept = {doc_id for doc_id, _ in self.doc_iterator(limit=limit, **where)}
            self._instances = [i for i in self._instances if i.doc_id in kept]
