"""Quantization robustness, as docs/leaderboard.md defines it, from collected rows.

Per corpus and for every model at every precision p: the four MUSE metrics, PrivLeak against the
retrain model at p (or a given / MUSE's published AUC when no retrain model was evaluated),
retention and revert of the forget metrics, utility retention, and the criteria C1-C4. Per
method: its worst precision and worst cases, and the default lexicographic rank. The target at
full precision (fp32, else bf16) is the denominator of every retention.

PrivLeak's formula and MUSE's published AUCs have their home in ``harness_ext.metrics.auc``. Every
number carries a 95% bootstrap interval when the per-document scores are known
(:mod:`leaderboards.intervals`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from harness_ext.errors import MuseQuantError
from harness_ext.metrics.auc import PUBLISHED_RETRAIN_AUC, privleak
from harness_ext.precision_names import REFERENCE_PRECISIONS, precision_order
from leaderboards.collect import Collection, ResultRow, collect_results
from leaderboards.intervals import (
    Interval,
    auc_interval,
    mean_interval,
    retention_interval,
    revert_interval,
)
from leaderboards.ranking import group_seeds, rank_methods
from leaderboards.scores import (
    PUBLISHED_ATTACK,
    Board,
    CellScores,
    CorpusBoard,
    Criteria,
    ModelScores,
    PrivLeakReference,
    RobustnessOptions,
)
from leaderboards.verdicts import judge, model_verdict


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
    )


def _with_verdict(
    model: ModelScores, retrain: ModelScores | None, full_precision: str, tolerance: float
) -> ModelScores:
    status, text = model_verdict(judge(model, retrain, full_precision, tolerance))
    return replace(model, verdict=status, verdict_text=text)


def _single_label(rows: Sequence[ResultRow], role: str, corpus: str) -> str | None:
    labels = sorted({row.label for row in rows if row.role == role})
    if len(labels) > 1:
        raise MuseQuantError(
            f"several {role} models for corpus {corpus} ({', '.join(labels)}; roles come from "
            f"the files' muse_quant.role and --{role}): keep one in the results folder"
        )
    return labels[0] if labels else None


def _fallback_reference(corpus: str, options: RobustnessOptions) -> tuple[float, str, str] | None:
    """(AUC, source, description) to use when no retrain model was evaluated, if there is one."""
    if options.retrain_auc is not None:
        return options.retrain_auc, "given", f"given AUC_retrain {options.retrain_auc:g}"
    if options.attack == PUBLISHED_ATTACK and corpus in PUBLISHED_RETRAIN_AUC:
        auc = PUBLISHED_RETRAIN_AUC[corpus]
        return auc, "published", f"MUSE's published Llama-2-7B retrain AUC {auc:g} (Min-40%)"
    return None


def _privleak_references(
    corpus: str,
    precisions: Sequence[str],
    retrain_rows: dict[str, ResultRow],
    options: RobustnessOptions,
) -> tuple[dict[str, PrivLeakReference], list[str]]:
    references, notes = {}, []
    fallback = None if retrain_rows else _fallback_reference(corpus, options)
    for precision in precisions:
        if retrain_rows:
            row = retrain_rows.get(precision)
            if row is None:
                notes.append(
                    f"retrain model has no results at {precision}: C1, C2, PrivLeak n/a there"
                )
                continue
            auc = row.aucs.get(options.attack)
            if not auc:
                notes.append(
                    f"retrain model has no usable {options.attack} AUC at {precision}: "
                    "PrivLeak is n/a there"
                )
                continue
            description = f"retrain model at {precision}: {options.attack} AUC {auc:.4f}"
            references[precision] = PrivLeakReference(precision, auc, "retrain", description)
        elif fallback is not None:
            auc, source, description = fallback
            references[precision] = PrivLeakReference(precision, auc, source, description)
    if retrain_rows and options.retrain_auc is not None:
        notes.append("--retrain-auc not used: the retrain model in the results is the reference")
    if not retrain_rows:
        notes.append(
            "no retrain model in the results (mark one with --retrain LABEL): C1 and C2 are n/a; "
            + (
                f"PrivLeak is against {fallback[2]}"
                if fallback
                else f"PrivLeak is n/a (no published AUC for {corpus} / {options.attack}; "
                "pass --retrain-auc)"
            )
        )
    return references, notes


def _full_precision(corpus: str, target: str, target_rows: dict[str, ResultRow]) -> str:
    for precision in REFERENCE_PRECISIONS:
        if precision in target_rows:
            return precision
    raise MuseQuantError(
        f"target {target!r} has no full-precision results for corpus {corpus} "
        f"({' or '.join(REFERENCE_PRECISIONS)}); retention is measured against it: "
        "evaluate it at fp32"
    )


def score_corpus(corpus: str, rows: Sequence[ResultRow], options: RobustnessOptions) -> CorpusBoard:
    """The board of one corpus from its rows (roles resolved)."""
    target = _single_label(rows, "target", corpus)
    if target is None:
        labels = ", ".join(sorted({row.label for row in rows}))
        raise MuseQuantError(
            f"no target model for corpus {corpus}: retention is relative to it; mark it with "
            f"--target LABEL (labels found: {labels})"
        )
    retrain = _single_label(rows, "retrain", corpus)
    precisions = tuple(sorted({row.precision for row in rows}, key=precision_order))
    by_label: dict[str, dict[str, ResultRow]] = {}
    for row in rows:
        by_label.setdefault(row.label, {})[row.precision] = row
    attacks = {attack for row in rows for attack in row.aucs}
    if attacks and options.attack not in attacks:
        raise MuseQuantError(
            f"attack {options.attack!r} is not in the {corpus} results; use one of "
            f"{', '.join(sorted(attacks))}"
        )
    full = _full_precision(corpus, target, by_label[target])
    target_full = by_label[target][full]
    retrain_rows = by_label.get(retrain, {}) if retrain else {}
    references, notes = _privleak_references(corpus, precisions, retrain_rows, options)
    methods, reference_models = [], []
    for label, own in sorted(by_label.items()):
        label_rows = [own[p] for p in precisions if p in own]
        cells = [
            score_cell(
                row,
                target_full=target_full,
                own_full=own.get(full),
                retrain=retrain_rows.get(row.precision),
                reference=references.get(row.precision),
                options=options,
            )
            for row in label_rows
        ]
        scores = summarize(label, label_rows, cells, precisions, full)
        (methods if scores.role == "method" else reference_models).append(scores)
        if scores.role == "method" and scores.missing_precisions:
            notes.append(f"{label} has no results at {', '.join(scores.missing_precisions)}")
    if not methods:
        notes.append("no unlearned models (role method) in the results: nothing to rank")
    retrain_scores = next((m for m in reference_models if m.role == "retrain"), None)
    methods = [
        _with_verdict(m, retrain_scores, full, options.revert_tolerance) for m in methods
    ]
    ranked, seed_groups, other_seeds = group_seeds(methods)
    return CorpusBoard(
        corpus=corpus,
        data=target_full.data,
        precisions=precisions,
        full_precision=full,
        target=target,
        retrain=retrain,
        privleak_references=tuple(references[p] for p in precisions if p in references),
        methods=rank_methods(ranked),
        seed_groups=seed_groups,
        other_seeds=other_seeds,
        references=tuple(sorted(reference_models, key=lambda m: m.role != "target")),
        notes=tuple(notes),
    )


def compute_board(collection: Collection, options: RobustnessOptions | None = None) -> Board:
    """The leaderboard of collected rows, one :class:`CorpusBoard` per corpus."""
    options = options or RobustnessOptions()
    corpora = sorted({row.corpus for row in collection.rows})
    boards = tuple(
        score_corpus(c, [r for r in collection.rows if r.corpus == c], options) for c in corpora
    )
    return Board(options, boards, collection.files, collection.warnings)


def build_board(
    results_dir: Path,
    options: RobustnessOptions | None = None,
    *,
    target: str | None = None,
    retrain: str | None = None,
    exclude: Path | None = None,
) -> Board:
    """Results folder -> board: :func:`collect_results` then :func:`compute_board`."""
    collection = collect_results(results_dir, target=target, retrain=retrain, exclude=exclude)
    return compute_board(collection, options)
