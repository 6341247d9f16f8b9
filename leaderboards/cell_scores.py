"""One model's numbers on one corpus: each of its cells (a precision) scored, then its worst cases.

A cell's MUSE metrics, PrivLeak against the reference AUC at its precision, retention of the
forget metrics and of utility against the target at full precision, revert against the same
model at full precision, the criteria C1-C4, and a 95% bootstrap interval for each number its
per-document scores allow (:mod:`leaderboards.intervals`); then the model's worst precision,
worst forget and utility retention and worst revert over its cells. Its own module because these
are the per-model rules; :mod:`leaderboards.robustness` decides, per corpus, what each model is
measured against (target, retrain, PrivLeak reference) and ranks them.
"""

from __future__ import annotations

from collections.abc import Sequence

from harness_ext.metrics.auc import privleak
from harness_ext.precision_names import SHIPPED_GGUF
from leaderboards.intervals import (
    Interval,
    auc_interval,
    mean_interval,
    retention_interval,
    revert_interval,
)
from leaderboards.results_file import ResultRow
from leaderboards.scores import (
    CellScores,
    Criteria,
    GgufMark,
    ModelScores,
    PrivLeakReference,
    RobustnessOptions,
)


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _at_most(value: float | None, bound: float | None) -> bool | None:
    return None if value is None or bound is None else value <= bound


def _largest(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def _retentions(row: ResultRow, target_full: ResultRow) -> tuple[float | None, float | None]:
    return (
        _ratio(row.verbmem_f, target_full.verbmem_f),
        _ratio(row.knowmem_f, target_full.knowmem_f),
    )


def score_cell(
    row: ResultRow,
    *,
    target_full: ResultRow,
    own_full: ResultRow | None,
    retrain: ResultRow | None,
    reference: PrivLeakReference | None,
    options: RobustnessOptions,
) -> CellScores:
    """The board's numbers for one row: ``own_full`` is the same model at full precision (for
    revert), ``retrain`` the retrain model at the row's precision (for C1/C2)."""

    retention_verbmem, retention_knowmem = _retentions(row, target_full)
    full_verbmem, full_knowmem = _retentions(own_full, target_full) if own_full else (None, None)
    auc = row.aucs.get(options.attack)
    leak = None if auc is None or reference is None else privleak(auc, reference.auc)
    utility_floor = (
        None if target_full.knowmem_r is None else options.utility_fraction * target_full.knowmem_r
    )
    return CellScores(
        precision=row.precision,
        verbmem_f=row.verbmem_f,
        knowmem_f=row.knowmem_f,
        knowmem_r=row.knowmem_r,
        auc=auc,
        privleak=leak,
        privleak_reference=reference.source if reference else None,
        retention_verbmem_f=retention_verbmem,
        retention_knowmem_f=retention_knowmem,
        forget_retention=_largest([retention_verbmem, retention_knowmem]),
        revert_verbmem_f=_difference(retention_verbmem, full_verbmem),
        revert_knowmem_f=_difference(retention_knowmem, full_knowmem),
        utility_retention=_ratio(row.knowmem_r, target_full.knowmem_r),
        criteria=Criteria(
            c1=_at_most(row.verbmem_f, retrain.verbmem_f if retrain else None),
            c2=_at_most(row.knowmem_f, retrain.knowmem_f if retrain else None),
            c3=None if leak is None else abs(leak) <= options.privleak_tolerance,
            c4=_at_most(utility_floor, row.knowmem_r),
        ),
        source=row.source,
        intervals=cell_intervals(row, target_full, own_full, reference, options.attack),
    )


def _doc_scores(row: ResultRow | None, task: str, name: str) -> tuple[tuple[int, ...], tuple]:
    """(document ids, scores) of one task of a row; empty when unknown."""
    scores = (row.doc_scores or {}).get(task) if row is not None else None
    if scores is None or name not in scores.scores:
        return (), ()
    return scores.doc_ids, scores.scores[name]


def cell_intervals(
    row: ResultRow,
    target_full: ResultRow,
    own_full: ResultRow | None,
    reference: PrivLeakReference | None,
    attack: str,
) -> dict[str, Interval]:
    """Every interval of one cell that its per-document scores allow; the paired ones need
    the same documents in every row they compare."""
    found: dict[str, Interval | None] = {}
    for metric in ("verbmem_f", "knowmem_f", "knowmem_r"):
        ids, own = _doc_scores(row, metric, metric)
        if not own:
            continue
        found[metric] = mean_interval(own)
        target_ids, target = _doc_scores(target_full, metric, metric)
        if target_ids != ids:
            continue
        name = "utility_retention" if metric == "knowmem_r" else f"retention_{metric}"
        found[name] = retention_interval(own, target)
        full_ids, full = _doc_scores(own_full, metric, metric)
        if metric != "knowmem_r" and full_ids == ids:
            found[f"revert_{metric}"] = revert_interval(own, full, target)
    task = (row.doc_scores or {}).get("privleak")
    if task is not None and task.sets is not None and attack in task.scores:
        scores = task.scores[attack]
        forget = [s for s, kind in zip(scores, task.sets, strict=True) if kind == "forget"]
        holdout = [s for s, kind in zip(scores, task.sets, strict=True) if kind == "holdout"]
        auc = auc_interval(forget, holdout)
        found["auc"] = auc
        if auc is not None and reference is not None:
            found["privleak"] = (privleak(auc[0], reference.auc), privleak(auc[1], reference.auc))
    return {name: interval for name, interval in found.items() if interval is not None}


def summarize(
    label: str,
    rows: Sequence[ResultRow],
    cells: Sequence[CellScores],
    precisions: Sequence[str],
    full_precision: str,
) -> ModelScores:
    """A model's worst precision (fewest criteria passed, first in P's order on ties), its
    worst-case forget and utility retention over the precisions it was evaluated at, and its
    worst revert over the quantized ones, each with its interval."""
    worst = min(cells, key=lambda c: c.criteria.passed)
    own = {cell.precision for cell in cells}
    reverts = [
        (getattr(c, f"revert_{m}"), c.precision, c.interval(f"revert_{m}"))
        for c in cells
        if c.precision != full_precision
        for m in ("verbmem_f", "knowmem_f")
        if getattr(c, f"revert_{m}") is not None
    ]
    revert = max(reverts, key=lambda r: r[0]) if reverts else (None, None, None)
    utilities = [(c.utility_retention, c.interval("utility_retention")) for c in cells]
    utility = min(
        ((u, i) for u, i in utilities if u is not None), key=lambda u: u[0], default=(None, None)
    )
    return ModelScores(
        label=label,
        role=rows[0].role or "method",
        method=rows[0].method,
        mode=rows[0].mode,
        cells=tuple(cells),
        missing_precisions=tuple(p for p in precisions if p not in own),
        worst_precision=worst.precision,
        criteria_passed=worst.criteria.passed,
        criteria_computable=worst.criteria.computable,
        worst_forget_retention=_largest([c.forget_retention for c in cells]),
        worst_utility_retention=utility[0],
        worst_revert=revert[0],
        worst_revert_precision=revert[1],
        worst_revert_interval=revert[2],
        worst_utility_interval=utility[1],
        seed=rows[0].seed,
        gguf=gguf_mark(rows),
    )


def gguf_mark(rows: Sequence[ResultRow]) -> GgufMark | None:
    """What the board says of a model whose rows came from a GGUF file (None: none did)."""
    origins = {row.gguf.sha256: row.gguf for row in rows if row.gguf is not None}
    if not origins:
        return None
    files = "; ".join(
        f"{o.file_type or 'type unsaid'}{f' ({o.bits}-bit)' if o.bits else ''}, sha256 "
        f"{o.sha256[:12]}"
        for o in origins.values()
    )
    others = sorted(row.precision for row in rows if row.gguf is None)
    text = (
        f"GGUF file{'s' if len(origins) > 1 else ''} {files}: {SHIPPED_GGUF} is the file as "
        "shipped, on llama.cpp; every other precision is built from its tensors dequantized to "
        "float32 (its full precision is the dequantized file)"
        + (f"; its rows at {', '.join(others)} are not from a GGUF file" if others else "")
    )
    return GgufMark(tuple(origins), tuple(o.file_type for o in origins.values()), text)
