"""The audit of one unlearned model: does its forgetting hold at each precision? (docs/audit.md)

Computed from results files only, on the board's own numbers (:mod:`leaderboards.robustness`):
retentions, reverts and criteria are read from its :class:`CellScores`, never recomputed here.
The verdicts are :mod:`leaderboards.verdicts`' (one rule for the board, the audit and the
demo), and the durability certificate is the board's (:mod:`leaderboards.certificate`, over
the model's own row); what this module adds is choosing the rows an audit reads and the
provenance each cell's results file carries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness_ext.errors import MuseQuantError
from leaderboards.collect import Collection, collect_results
from leaderboards.results_file import read_results_file
from leaderboards.robustness import (
    Board,
    CorpusBoard,
    ModelScores,
    RobustnessOptions,
    compute_board,
)
from leaderboards.scores import Certificate
from leaderboards.verdicts import PrecisionVerdict, judge

#: The files a report is made of; ``report.json`` says which command wrote it.
REPORT_MARKDOWN, REPORT_JSON = REPORT_FILES = ("report.md", "report.json")
GENERATOR = "muse-quant audit"


@dataclass(frozen=True)
class AuditOptions:
    """The verdict's tolerance, the certificate's deployments and the board's options (attack,
    C3/C4 tolerances); the board judges and certifies with these too."""

    #: Largest rise of a forget retention (absolute, 0.10 = 10 points of the target's score)
    #: that still counts as holding; also the certificate's epsilon.
    revert_tolerance: float = RobustnessOptions.revert_tolerance
    robustness: RobustnessOptions = field(default_factory=RobustnessOptions)
    #: The durability certificate's deployments D (None: every audited precision but full).
    certify: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        robustness = replace(
            self.robustness, revert_tolerance=self.revert_tolerance, certify=self.certify
        )
        object.__setattr__(self, "robustness", robustness)
        object.__setattr__(self, "certify", robustness.certify)


@dataclass(frozen=True)
class CellProvenance:
    """Where one cell's numbers come from, as its results file records it."""

    label: str
    role: str
    precision: str
    #: The results file, relative to the results folder.
    source: str
    #: The sweep's hash of everything that determines the result (None for other files).
    cell_key: str | None
    date: float | None
    lm_eval_version: str | None
    #: ``config.muse_provenance``: weights and adapter hashes, precision and library config,
    #: calibration, library versions, device (None when the file was not written by ``muse``).
    muse_provenance: Mapping[str, Any] | None


@dataclass(frozen=True)
class Audit:
    """One model's audit: the evidence (a board of one corpus: the model and the two references
    at the audited precisions), a verdict per precision, and the provenance of every cell."""

    label: str
    options: AuditOptions
    board: Board
    model: ModelScores
    verdicts: tuple[PrecisionVerdict, ...]
    #: ``versions`` of the corpus' MUSE tasks (equal in every file: the board checks).
    task_versions: Mapping[str, Any]
    provenance: tuple[CellProvenance, ...]

    @property
    def corpus(self) -> CorpusBoard:
        return self.board.corpora[0]

    @property
    def certificate(self) -> Certificate | None:
        """The board's durability certificate of the audited model (one seed: its own row);
        None when no quantized precision was audited."""
        return self.model.certificate

    @property
    def passed(self) -> bool:
        return all(verdict.passed for verdict in self.verdicts)

    @property
    def exit_status(self) -> int:
        """For CI: 0 when the audit passes, 1 when it fails (bad input exits 2 before this)."""
        return 0 if self.passed else 1

    @property
    def headline(self) -> str:
        """``PASS: ...``; ``FAIL: `` and every failing precision's verdict; or
        ``INCONCLUSIVE: `` when nothing failed but an interval could not decide."""
        if self.passed:
            return (
                f"PASS: forgetting holds at every precision ({', '.join(self.corpus.precisions)})"
            )
        failing = [v for v in self.verdicts if not v.passed]
        word = "INCONCLUSIVE" if all(v.status == "inconclusive" for v in failing) else "FAIL"
        return f"{word}: " + "; ".join(v.text for v in failing)


# --------------------------------------------------------------------------- from results files


def _provenance(results_dir: Path, model: ModelScores) -> list[CellProvenance]:
    cells = []
    for cell in model.cells:
        data = read_results_file(results_dir / cell.source) or {}
        date = data.get("date")
        cells.append(
            CellProvenance(
                label=model.label,
                role=model.role,
                precision=cell.precision,
                source=cell.source,
                cell_key=(data.get("muse_quant") or {}).get("cell_key"),
                date=date if isinstance(date, int | float) else None,
                lm_eval_version=data.get("lm_eval_version"),
                muse_provenance=(data.get("config") or {}).get("muse_provenance"),
            )
        )
    return cells


def _task_versions(results_dir: Path, corpus: str, source: str) -> dict[str, Any]:
    versions = (read_results_file(results_dir / source) or {}).get("versions") or {}
    prefix = f"muse_{corpus}"
    return {task: version for task, version in sorted(versions.items()) if task.startswith(prefix)}


def _audited_rows(
    collection: Collection, label: str, corpus: str | None, precisions: Sequence[str] | None
) -> Collection:
    """The rows the audit reads: the model and the references, on one corpus, at the audited
    precisions (other models and precisions in the folder change nothing)."""
    own = [row for row in collection.rows if row.label == label]
    if not own:
        labels = ", ".join(sorted({row.label for row in collection.rows}))
        raise MuseQuantError(f"no results for {label!r} (labels found: {labels})")
    if own[0].role != "method":
        raise MuseQuantError(f"{label!r} is the {own[0].role} model; audit an unlearned model")
    corpora = sorted({row.corpus for row in own})
    if corpus is None and len(corpora) > 1:
        raise MuseQuantError(f"{label!r} has results on {', '.join(corpora)}: name the corpus")
    corpus = corpus or corpora[0]
    evaluated = {row.precision for row in own if row.corpus == corpus}
    if not evaluated:
        raise MuseQuantError(f"{label!r} has no results on {corpus} (only {', '.join(corpora)})")
    wanted = set(precisions or evaluated)
    missing = sorted(wanted - evaluated)
    if missing:
        raise MuseQuantError(f"{label!r} has no {corpus} results at {', '.join(missing)}")
    rows = tuple(
        row
        for row in collection.rows
        if row.corpus == corpus
        and row.precision in wanted
        and (row.label == label or row.role in ("target", "retrain"))
    )
    return Collection(rows, tuple(sorted({row.source for row in rows})), collection.warnings)


def _judge(board: CorpusBoard, model: ModelScores, tolerance: float) -> list[PrecisionVerdict]:
    retrain = next((m for m in board.references if m.role == "retrain"), None)
    verdicts = judge(model, retrain, board.full_precision, tolerance)
    if verdicts is None:
        raise MuseQuantError(
            f"{model.label} has no results at {board.full_precision} (the target's full "
            "precision): every verdict compares against the model there"
        )
    return verdicts


def audit_results(
    results_dir: Path,
    label: str,
    options: AuditOptions | None = None,
    *,
    corpus: str | None = None,
    precisions: Sequence[str] | None = None,
    target: str | None = None,
    retrain: str | None = None,
) -> Audit:
    """Audit ``label`` from the results files under ``results_dir``.

    ``corpus`` may be left out when the model was evaluated on one; ``precisions`` (default: all
    the model has) must include the target's full precision. ``target``/``retrain`` name the
    references' labels when the files do not say their roles. Raises :class:`MuseQuantError`
    when the files cannot answer (no such model, no target, a precision missing).
    """
    options = options or AuditOptions()
    results_dir = Path(results_dir)
    collection = collect_results(results_dir, target=target, retrain=retrain)
    audited = _audited_rows(collection, label, corpus, precisions)
    board = compute_board(audited, options.robustness)
    (corpus_board,) = board.corpora
    (model,) = corpus_board.methods
    provenance = [
        cell
        for scores in (model, *corpus_board.references)
        for cell in _provenance(results_dir, scores)
    ]
    return Audit(
        label=label,
        options=options,
        board=board,
        model=model,
        verdicts=tuple(_judge(corpus_board, model, options.revert_tolerance)),
        task_versions=_task_versions(results_dir, corpus_board.corpus, model.cells[0].source),
        provenance=tuple(provenance),
    )
