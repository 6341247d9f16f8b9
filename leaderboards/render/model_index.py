"""``model-index/<label>.yaml``: a Hugging Face ``model-index`` block per evaluated model, to paste
into a model card's front matter.

One result per corpus; each metric names its precision (``args.precision``). ``yaml.safe_dump``
quotes whatever a label holds, so the block stays valid YAML.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import yaml

from leaderboards.render.describe import data_source
from leaderboards.scores import Board, CorpusBoard, ModelScores

#: (field of CellScores, which is also the metric type; metric name) written per precision.
METRICS = (
    ("verbmem_f", "VerbMem_f (forget, ROUGE-L F1 x 100)"),
    ("knowmem_f", "KnowMem_f (forget QA, ROUGE-L F1 x 100)"),
    ("knowmem_r", "KnowMem_r (retain QA, ROUGE-L F1 x 100)"),
    ("privleak", "PrivLeak (%)"),
    ("retention_verbmem_f", "VerbMem_f retention"),
    ("retention_knowmem_f", "KnowMem_f retention"),
    ("utility_retention", "utility retention (KnowMem_r)"),
)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def file_name(label: str) -> str:
    """A file name for a label: the label itself when it is a plain name, else a cleaned one
    with a short hash of the label, so that different labels never share a file."""
    clean = _UNSAFE.sub("_", label).strip("._")[:80] or "model"
    if clean == label:
        return f"{clean}.yaml"
    return f"{clean}-{hashlib.sha256(label.encode()).hexdigest()[:8]}.yaml"


def _result(corpus: CorpusBoard, model: ModelScores, attack: str) -> dict[str, Any]:
    dataset = {
        "type": "local"
        if corpus.data is not None
        else f"muse-bench/MUSE-{corpus.corpus.capitalize()}",
        "name": data_source(corpus),
        "config": corpus.corpus,
    }
    metrics = [
        {
            "type": field,
            "name": f"{name} at {cell.precision}",
            "value": round(getattr(cell, field), 6),
            "args": {
                "precision": cell.precision,
                **({"attack": attack} if field == "privleak" else {}),
            },
        }
        for cell in model.cells
        for field, name in METRICS
        if getattr(cell, field) is not None
    ]
    return {
        "task": {
            "type": "text-generation",
            "name": "MUSE unlearning evaluation under quantization",
        },
        "dataset": dataset,
        "metrics": metrics,
        "source": {"name": "muse-quant leaderboard"},
    }


def render_model_index(board: Board) -> dict[str, str]:
    """``{file name: YAML}``, one per label found on any corpus."""
    results: dict[str, list[dict[str, Any]]] = {}
    for corpus in board.corpora:
        for model in corpus.models:
            results.setdefault(model.label, []).append(_result(corpus, model, board.options.attack))
    return {
        file_name(label): yaml.safe_dump(
            {"model-index": [{"name": label, "results": label_results}]},
            sort_keys=False,
            allow_unicode=True,
        )
        for label, label_results in sorted(results.items())
    }
