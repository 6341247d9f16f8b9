"""``hub/<label>/.eval_results/<file>.yaml``: a model's scores in the Hugging Face Hub's own
evaluation-results format, one folder per evaluated model, to upload into its repository as is.

The Hub reads a model's scores from YAML files in the ``.eval_results/`` folder of the model's
repository (https://huggingface.co/docs/hub/eval-results; ``huggingface_hub.EvalResultEntry``).
Each file is a list of entries; an entry needs ``dataset.id`` (the benchmark's Hub dataset),
``dataset.task_id`` and ``value``, and may say more in ``notes``. The schema has no field for a
precision, so every entry starts its ``notes`` with ``precision: <name>``, and each file holds
one corpus at one precision (a variant of a benchmark gets a file of its own, as the Hub's
community results do). Only fields of the schema are written, so the Hub's check at push time
has nothing unknown to refuse; ``yaml.safe_dump`` quotes whatever a label or precision holds.
"""

from __future__ import annotations

from typing import Any

import yaml

from leaderboards.render.board_layout import EVAL_RESULTS_DIR, HUB_DIR
from leaderboards.render.model_index import METRICS as MODEL_INDEX_METRICS
from leaderboards.render.model_index import file_name
from leaderboards.scores import Board, CellScores, CorpusBoard

__all__ = ["EVAL_RESULTS_DIR", "HUB_DIR", "METRICS", "dataset_id", "render_hub_results"]

#: (field of CellScores; what the number is), written per precision when the board has it: the
#: model-index metrics, then the reverts (how far quantization brought a forget metric back).
METRICS = (
    *MODEL_INDEX_METRICS,
    ("revert_verbmem_f", "VerbMem_f revert (retention here - at full precision)"),
    ("revert_knowmem_f", "KnowMem_f revert (retention here - at full precision)"),
)
#: The fields measured against the target at full precision.
_RELATIVE = ("retention", "utility", "revert")
#: No folding: each entry's notes stay on one line.
_ONE_LINE = 2**16


def dataset_id(corpus: str) -> str:
    """The Hub dataset whose tasks the corpus' numbers are: MUSE's, ``muse-bench/MUSE-<Corpus>``."""
    return f"muse-bench/MUSE-{corpus.capitalize()}"


def model_folder(label: str) -> str:
    """The folder of a model's files under ``hub/``: named as its ``model-index`` file is."""
    return file_name(label).removesuffix(".yaml")


def _notes(corpus: CorpusBoard, cell: CellScores, field: str, name: str, attack: str) -> str:
    """The entry's setup, precision first: what was measured, against what, from which data."""
    parts = [f"precision: {cell.precision}", name]
    if field == "privleak":
        against = [
            r.description for r in corpus.privleak_references if r.precision == cell.precision
        ]
        parts.append(f"attack {attack}" + (f", against {against[0]}" if against else ""))
    if field.startswith(_RELATIVE):
        parts.append(f"relative to {corpus.target} at {corpus.full_precision}")
    interval = cell.interval(field)
    if interval is not None:
        parts.append(f"95% interval [{interval[0]:.6g}, {interval[1]:.6g}]")
    if corpus.data is not None:  # the Hub id still names MUSE: say the numbers are not from it
        parts.append(f"data: local folder {corpus.data}, not the Hub dataset")
    return "; ".join(parts)


def _entries(corpus: CorpusBoard, cell: CellScores, attack: str) -> list[dict[str, Any]]:
    """One entry per metric the cell has (None, n/a, is left out)."""
    return [
        {
            "dataset": {
                "id": dataset_id(corpus.corpus),
                "task_id": f"muse_{corpus.corpus}_{field}",
            },
            "value": round(getattr(cell, field), 6),
            "notes": _notes(corpus, cell, field, name, attack),
        }
        for field, name in METRICS
        if getattr(cell, field) is not None
    ]


def render_hub_results(board: Board) -> dict[str, str]:
    """``{path relative to the board folder: YAML}``, sorted: per model (on any corpus) a
    ``hub/<label>/.eval_results/`` folder with one file per corpus and precision."""
    files: dict[str, str] = {}
    for corpus in board.corpora:
        for model in corpus.models:
            folder = f"{HUB_DIR}/{model_folder(model.label)}/{EVAL_RESULTS_DIR}"
            for cell in model.cells:
                entries = _entries(corpus, cell, board.options.attack)
                if entries:
                    name = file_name(f"muse_{corpus.corpus}_{cell.precision}")
                    files[f"{folder}/{name}"] = yaml.safe_dump(
                        entries, sort_keys=False, allow_unicode=True, width=_ONE_LINE
                    )
    return dict(sorted(files.items()))
