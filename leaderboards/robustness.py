"""Quantization robustness, as docs/leaderboard.md defines it, from collected rows.

Per corpus and for every model at every precision p: the four MUSE metrics, PrivLeak against the
retrain model at p (or a given / MUSE's published AUC when no retrain model was evaluated),
retention and revert of the forget metrics, utility retention, and the criteria C1-C4. Per
method: its worst precision and worst cases, its verdict, its durability certificate
(:mod:`leaderboards.certificate`), and the default lexicographic rank.
The target at full precision (fp32, else bf16) is the denominator of every retention.

This module decides, per corpus, what every model is measured against (the target and its full
precision, the retrain model, the PrivLeak reference at each precision) and ranks the methods;
:mod:`leaderboards.cell_scores` computes each model's numbers from those. PrivLeak's formula and
MUSE's published AUCs have their home in ``harness_ext.metrics.auc``. Every number carries a 95%
bootstrap interval when the per-document scores are known (:mod:`leaderboards.intervals`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from harness_ext.errors import MuseQuantError
from harness_ext.metrics.auc import PUBLISHED_RETRAIN_AUC
from harness_ext.precision_names import REFERENCE_PRECISIONS, precision_order
from leaderboards.cell_scores import score_cell, summarize
from leaderboards.certificate import certify_ranked, check_deployments
from leaderboards.collect import Collection, collect_results
from leaderboards.ranking import group_seeds, rank_methods
from leaderboards.results_file import ResultRow
from leaderboards.scores import (
    GGUF_MARKER,
    PUBLISHED_ATTACK,
    Board,
    CorpusBoard,
    ModelScores,
    PrivLeakReference,
    RobustnessOptions,
)
from leaderboards.verdicts import judge, model_verdict


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
        if scores.gguf is not None:
            notes.append(f"{label}{GGUF_MARKER}: {scores.gguf.text}")
    if not methods:
        notes.append("no unlearned models (role method) in the results: nothing to rank")
    retrain_scores = next((m for m in reference_models if m.role == "retrain"), None)
    methods = [_with_verdict(m, retrain_scores, full, options.revert_tolerance) for m in methods]
    ranked, seed_groups, other_seeds = group_seeds(methods)
    ranked = certify_ranked(
        ranked,
        seed_groups,
        methods,
        full_precision=full,
        names=options.certify,
        tolerance=options.revert_tolerance,
    )
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
    check_deployments(options.certify, {row.precision for row in collection.rows})
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
