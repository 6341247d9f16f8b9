"""The sentences every board states about itself (P, references, criteria, ranking rule), written
once so that Markdown and HTML say the same; the renderers escape them."""

from __future__ import annotations

from leaderboards.certificate import CERTIFICATE_RULE, epsilon_text
from leaderboards.intervals import DESCRIPTION as INTERVALS
from leaderboards.ranking import RANKING_RULE
from leaderboards.render.columns import format_value
from leaderboards.scores import CRITERIA, Board, CorpusBoard
from leaderboards.verdicts import LOST_UTILITY, NEVER_FORGOT, VERDICT_RULE

#: The verdicts in the order the opening sentence names them.
VERDICT_ORDER = ("holds", "reverts", "inconclusive", NEVER_FORGOT, LOST_UTILITY, "n/a")


def data_source(corpus: CorpusBoard) -> str:
    """Where the corpus' texts came from: the hub dataset or the local folder the files name."""
    if corpus.data is None:
        return f"Hugging Face hub, muse-bench/MUSE-{corpus.corpus.capitalize()}"
    return f"local folder {corpus.data}"


def facts(board: Board, corpus: CorpusBoard) -> list[tuple[str, str]]:
    """(name, statement) pairs: what the numbers of this corpus were measured at and against."""
    options = board.options
    references = sorted({ref.description for ref in corpus.privleak_references})
    criteria = {
        "C1": CRITERIA[0][1],
        "C2": CRITERIA[1][1],
        "C3": f"no privacy leakage: |PrivLeak| <= {options.privleak_tolerance:g}",
        "C4": f"utility kept: KnowMem_r >= {options.utility_fraction:g} x the target's at "
        f"{corpus.full_precision}",
    }
    return [
        ("Data", data_source(corpus)),
        (
            "Precisions P",
            f"{', '.join(corpus.precisions)} (full precision: {corpus.full_precision})",
        ),
        ("Target", f"{corpus.target} at {corpus.full_precision} (denominator of every retention)"),
        ("Retrain", corpus.retrain or "none in the results (C1, C2 n/a)"),
        (
            "PrivLeak",
            f"attack {options.attack}, against "
            + ("; ".join(references) if references else "nothing (n/a)"),
        ),
        ("Criteria", "; ".join(f"{name} {text}" for name, text in criteria.items())),
        ("Verdicts", f"revert tolerance {options.revert_tolerance:g}. {VERDICT_RULE}"),
        ("Certificate", f"{certificate_scope(board)}. {CERTIFICATE_RULE}"),
        ("Intervals", INTERVALS),
        ("Ranking", RANKING_RULE),
    ]


def certificate_scope(board: Board) -> str:
    """epsilon and D of the board's durability certificates, in words."""
    options = board.options
    over = (
        "{" + ", ".join(options.certify) + "} (--certify)"
        if options.certify
        else "every precision a method's seeds were evaluated at but full precision"
    )
    return f"ε={epsilon_text(options.revert_tolerance)} (the revert tolerance), D = {over}"


#: The seeds table: its headers, and each group's cells.
SEED_HEADERS = (
    "Method", "Mode", "Seeds", "Durability", "Mean worst revert", "Worst seed",
    "Certificate per seed",
)  # fmt: skip


def seed_rows(corpus: CorpusBoard) -> list[tuple[str, ...]]:
    """One row per method run with several seeds (ranked by its worst seed)."""
    return [
        (
            group.method,
            group.mode or "",
            f"{len(group.seeds)} ({', '.join(map(str, group.seeds))})",
            f"{100 * group.durability:.0f}% hold",
            format_value("delta", group.mean_worst_revert),
            group.worst,
            _seed_certificates(corpus, group.worst),
        )
        for group in corpus.seed_groups
    ]


def _seed_certificates(corpus: CorpusBoard, worst: str) -> str:
    """Each seed's certificate sentence; the group's certificate is on its ranked worst seed."""
    certificate = next((m.certificate for m in corpus.methods if m.label == worst), None)
    if certificate is None:
        return "n/a (no deployment to certify over)"
    return "; ".join(seed.text for seed in certificate.seeds)


def opening_sentence(corpus: CorpusBoard) -> str:
    """One sentence: which methods hold after quantization, which revert, which cannot tell."""
    groups: dict[str, list[str]] = {}
    for model in corpus.methods:
        groups.setdefault(model.verdict or "n/a", []).append(model.label)
    if not groups:
        return f"{corpus.corpus}: no unlearned models to judge."
    parts = [
        f"{verdict} ({len(groups[verdict])}): {', '.join(groups[verdict])}"
        for verdict in VERDICT_ORDER
        if verdict in groups
    ]
    return f"{corpus.corpus}, after quantization at {', '.join(_quantized(corpus))}: " + (
        "; ".join(parts) + "."
    )


def _quantized(corpus: CorpusBoard) -> list[str]:
    return [p for p in corpus.precisions if p != corpus.full_precision] or ["no precision"]
