"""The default ranking: robustness under quantization, with the ties its intervals cannot break.

Models that forgot with their utility kept (the full-precision gate of
:mod:`leaderboards.verdicts`) rank above every model that did not. Among each group: the
smallest worst-case revert over the quantized precisions, then most criteria passed at the
worst precision, then the highest worst-case utility retention. Two adjacent models share a rank
when their worst reverts' intervals overlap, they pass as many criteria, and their worst-case
utility retentions' intervals overlap: the data cannot order them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

from leaderboards.intervals import Interval
from leaderboards.scores import ModelScores, SeedGroup
from leaderboards.verdicts import LOST_UTILITY, NEVER_FORGOT

#: Stated on every board.
RANKING_RULE = (
    "1. models that forgot at full precision (C1, C2) and kept their utility (C4) first; "
    "2. smallest worst-case revert over the quantized precisions (the larger of the VerbMem_f "
    "and KnowMem_f reverts); 3. most criteria (C1-C4) passed at the worst precision (where the "
    "model passes fewest); 4. highest worst-case utility retention. Adjacent models share a "
    "rank when the 95% intervals of their worst reverts overlap, they pass as many criteria, "
    "and the intervals of their worst-case utility retentions overlap (without per-document "
    "scores, only equal values tie). n/a sorts last. A method run with several seeds ranks "
    "by its worst seed (the seed that would rank last)."
)


def gated(scores: ModelScores) -> bool:
    """Whether the full-precision gate stops the model (never forgot, or lost its utility)."""
    return scores.verdict in (NEVER_FORGOT, LOST_UTILITY)


def ranking_key(scores: ModelScores) -> tuple[bool, float, int, float]:
    """The order (:data:`RANKING_RULE`) by point values; smaller is better."""
    revert, utility = scores.worst_revert, scores.worst_utility_retention
    return (
        gated(scores),
        math.inf if revert is None else revert,
        -scores.criteria_passed,
        math.inf if utility is None else -utility,
    )


def _span(value: float | None, interval: Interval | None) -> Interval | None:
    if interval is not None:
        return interval
    return None if value is None else (value, value)


def _indistinguishable(a: ModelScores, b: ModelScores) -> bool:
    """Whether the intervals cannot order two models (see :data:`RANKING_RULE`)."""
    if gated(a) != gated(b) or a.criteria_passed != b.criteria_passed:
        return False
    pairs = (
        (_span(a.worst_revert, a.worst_revert_interval),
         _span(b.worst_revert, b.worst_revert_interval)),
        (_span(a.worst_utility_retention, a.worst_utility_interval),
         _span(b.worst_utility_retention, b.worst_utility_interval)),
    )  # fmt: skip
    for x, y in pairs:
        if (x is None) != (y is None):
            return False
        if x is not None and y is not None and not (x[0] <= y[1] and y[0] <= x[1]):
            return False
    return True


def group_seeds(
    methods: Sequence[ModelScores],
) -> tuple[list[ModelScores], tuple[SeedGroup, ...], tuple[ModelScores, ...]]:
    """Methods of one method and mode with several seeds become a :class:`SeedGroup` ranked by
    its worst seed: (what to rank, the groups, the seeds other than each group's worst)."""
    by_method: dict[tuple[str | None, str | None], list[ModelScores]] = {}
    for model in methods:
        if model.seed is not None and model.method is not None:
            by_method.setdefault((model.method, model.mode), []).append(model)
    groups, others = [], []
    grouped = {m.label for members in by_method.values() if len(members) > 1 for m in members}
    for (method, mode), members in by_method.items():
        if len(members) < 2:
            continue
        members.sort(key=lambda m: m.seed)
        worst = max(members, key=lambda m: (ranking_key(m), m.label))
        reverts = [m.worst_revert for m in members]
        groups.append(
            SeedGroup(
                method=str(method),
                mode=mode,
                labels=tuple(m.label for m in members),
                seeds=tuple(int(m.seed) for m in members if m.seed is not None),
                mean_worst_revert=None if None in reverts else sum(reverts) / len(reverts),
                worst=worst.label,
                durability=sum(m.verdict == "holds" for m in members) / len(members),
            )
        )
        others += [m for m in members if m is not worst]
    ranked = [m for m in methods if m.label not in grouped or m.label in {g.worst for g in groups}]
    return ranked, tuple(groups), tuple(sorted(others, key=lambda m: m.label))


def rank_methods(methods: Sequence[ModelScores]) -> tuple[ModelScores, ...]:
    """Methods best first, each with its rank; models the intervals cannot separate from the
    one before share its rank (1, 1, 3)."""
    ordered = sorted(methods, key=lambda m: (ranking_key(m), m.label))
    ranked: list[ModelScores] = []
    for i, model in enumerate(ordered):
        tied = bool(ranked) and _indistinguishable(ranked[-1], model)
        ranked.append(replace(model, rank=ranked[-1].rank if tied else i + 1))
    return tuple(ranked)
