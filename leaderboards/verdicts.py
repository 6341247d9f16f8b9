"""The verdict rule: does a model's forgetting hold after quantization, or cannot we tell?

One rule for the board, the audit and the demo's headline. First the full-precision gate: a
model that never forgot (MUSE's C1 or C2 fails at full precision) or lost its utility (C4 fails
there) gets that verdict, because quantization has nothing to give back or nothing worth
keeping. Then at each quantized precision p, for VerbMem_f and KnowMem_f, the revert (retention
at p minus retention at full precision) against the tolerance, by its 95% interval: *reverts*
when the interval's lower bound is above the tolerance, *holds* when its upper bound is at or
below it, *inconclusive* when it straddles it. Without per-document scores (a results file from
elsewhere) the point estimate decides, and the verdict says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from leaderboards.intervals import Interval
from leaderboards.scores import CellScores, ModelScores

#: Stated on every board and report.
VERDICT_RULE = (
    "At full precision (fp32, else bf16) a model forgets when MUSE's C1 (VerbMem_f <= the "
    "retrain model's) and C2 (KnowMem_f <= the retrain model's) pass, and keeps its utility "
    "when C4 passes (KnowMem_r >= 0.9 x the target's); a model that never forgot or lost its "
    "utility gets that verdict (quantization has nothing to give back, or nothing worth "
    "keeping). At each quantized precision p the revert of VerbMem_f and of KnowMem_f "
    "(retention at p - retention at full precision, retention = score / the target's at full "
    "precision) is compared with the revert tolerance through its 95% bootstrap interval: it "
    "reverts when the lower bound is above the tolerance, holds when the upper bound is at or "
    "below it, and is inconclusive when the interval straddles it (without per-document scores "
    "the point estimate decides, and the verdict says so). A number the rule needs that is n/a "
    "makes the verdict n/a. An audit passes only when the model forgets at full precision and "
    "holds at every quantized precision."
)

#: (metric name, CellScores field, criterion) of the two forget metrics the verdict reads.
FORGET_METRICS = (("VerbMem_f", "verbmem_f", "c1"), ("KnowMem_f", "knowmem_f", "c2"))

#: Verdict statuses that pass: at full precision, and at a quantized precision.
PASSING = ("forgets", "holds")
#: A model's verdict when the full-precision gate stops it.
NEVER_FORGOT, LOST_UTILITY = "never forgot", "lost utility"


@dataclass(frozen=True)
class PrecisionVerdict:
    """The verdict at one precision: ``forgets``/``no forgetting``/``lost utility`` (full
    precision), ``holds``/``reverts``/``inconclusive`` (quantized) or ``n/a``, with the
    sentence that says why."""

    precision: str
    status: str
    text: str

    @property
    def passed(self) -> bool:
        return self.status in PASSING


def number(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def interval_text(interval: Interval | None, digits: int = 2) -> str:
    """``[0.12, 0.31]``, or ``""`` when unknown."""
    if interval is None:
        return ""
    return f"[{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"


def cell_at(scores: ModelScores | None, precision: str) -> CellScores | None:
    if scores is None:
        return None
    return next((cell for cell in scores.cells if cell.precision == precision), None)


def judge_full_precision(cell: CellScores, retrain: CellScores | None) -> PrecisionVerdict:
    """Did the model forget at all (C1, C2), and keep its utility (C4)?"""
    failed, unknown, passed = [], [], []
    for name, score, criterion in FORGET_METRICS:
        mark = getattr(cell.criteria, criterion)
        value = number(getattr(cell, score), 1)
        reference = number(getattr(retrain, score) if retrain else None, 1)
        if mark is None:
            unknown.append(f"{criterion.upper()} n/a ({name} {value}, retrain's {reference})")
        elif mark:
            passed.append(f"{name} {value} <= retrain's {reference}")
        else:
            failed.append(f"{name} {value} > retrain's {reference} ({criterion.upper()} fails)")
    where = cell.precision
    if failed:
        return PrecisionVerdict(
            where, "no forgetting", f"no forgetting at {where}: " + ", ".join(failed)
        )
    if cell.criteria.c4 is False:
        return PrecisionVerdict(
            where,
            LOST_UTILITY,
            f"lost utility at {where}: KnowMem_r {number(cell.knowmem_r, 1)}, utility "
            f"retention {number(cell.utility_retention, 2)} (C4 fails)",
        )
    if unknown:
        return PrecisionVerdict(where, "n/a", f"cannot tell at {where}: " + ", ".join(unknown))
    return PrecisionVerdict(where, "forgets", f"forgets at {where}: " + ", ".join(passed))


def judge_quantized(
    cell: CellScores, full: CellScores, retrain: CellScores | None, revert_tolerance: float
) -> PrecisionVerdict:
    """Did quantization give the forgotten back? Each forget metric's revert against the
    tolerance, by its interval; a C1/C2 lost while holding is named in the text, not counted
    (near the retrain model's level one question can flip it)."""
    reverted, straddles, within, unknown = [], [], [], []
    for name, score, criterion in FORGET_METRICS:
        revert = getattr(cell, f"revert_{score}")
        interval = cell.interval(f"revert_{score}")
        was, now = getattr(full.criteria, criterion), getattr(cell.criteria, criterion)
        lost = was is True and now is False
        if revert is None:
            unknown.append(f"{name} revert n/a")
            continue
        if interval is None:  # no per-document scores: the point estimate decides
            status = "reverts" if revert > revert_tolerance else "holds"
            bounds = ""
        else:
            low, high = interval
            status = (
                "reverts" if low > revert_tolerance
                else "holds" if high <= revert_tolerance
                else "inconclusive"
            )  # fmt: skip
            bounds = f" {interval_text(interval)}"
        if status == "holds" and not lost:
            continue
        retention = f"retention_{score}"
        clause = (
            f"{name} {number(getattr(full, score), 1)} -> {number(getattr(cell, score), 1)}, "
            f"retention {number(getattr(full, retention), 2)} -> "
            f"{number(getattr(cell, retention), 2)}"
        )
        if interval is not None:
            clause += f" (revert {revert:+.2f}{bounds})"
        if lost:
            reference = number(getattr(retrain, score) if retrain else None, 1)
            clause += f", {criterion.upper()} fails (retrain's {reference})"
        {"reverts": reverted, "inconclusive": straddles, "holds": within}[status].append(clause)
    where, tolerance = cell.precision, f"{revert_tolerance:.2f}"
    if reverted:
        return PrecisionVerdict(where, "reverts", f"reverts at {where}: " + "; ".join(reverted))
    if straddles:
        return PrecisionVerdict(
            where,
            "inconclusive",
            f"inconclusive at {where} (the interval straddles the tolerance {tolerance}): "
            + "; ".join(straddles),
        )
    if unknown:
        return PrecisionVerdict(where, "n/a", f"cannot tell at {where}: " + ", ".join(unknown))
    text = f"forgetting holds at {where}"
    if within:
        text += " (within the revert tolerance: " + "; ".join(within) + ")"
    return PrecisionVerdict(where, "holds", text)


def judge(
    model: ModelScores, retrain: ModelScores | None, full_precision: str, revert_tolerance: float
) -> list[PrecisionVerdict] | None:
    """The verdict at each of the model's precisions, full precision first (None when the
    model has no results at the target's full precision)."""
    full = cell_at(model, full_precision)
    if full is None:
        return None
    verdicts = [judge_full_precision(full, cell_at(retrain, full.precision))]
    for cell in model.cells:
        if cell is not full:
            reference = cell_at(retrain, cell.precision)
            verdicts.append(judge_quantized(cell, full, reference, revert_tolerance))
    return verdicts


def model_verdict(verdicts: Sequence[PrecisionVerdict] | None) -> tuple[str, str]:
    """A model's one-word verdict and its sentence: the gate's, else the worst quantized one
    (reverts, then inconclusive, then n/a), else ``holds``."""
    if not verdicts:
        return "n/a", "no results at the target's full precision"
    full, *quantized = verdicts
    gate = {"no forgetting": NEVER_FORGOT, LOST_UTILITY: LOST_UTILITY, "n/a": "n/a"}
    if full.status in gate:
        return gate[full.status], full.text
    for status in ("reverts", "inconclusive", "n/a"):
        found = [v.text for v in quantized if v.status == status]
        if found:
            return status, "; ".join(found)
    where = ", ".join(v.precision for v in quantized) or "no quantized precision"
    return "holds", f"forgets at {full.precision} and holds at {where}"
