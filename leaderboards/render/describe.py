"""The sentences every board states about itself (P, references, criteria, ranking rule), written
once so that Markdown and HTML say the same; the renderers escape them."""

from __future__ import annotations

from leaderboards.robustness import CRITERIA, RANKING_RULE, Board, CorpusBoard


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
        ("Ranking", RANKING_RULE),
    ]
