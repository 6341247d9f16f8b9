"""The durability certificate (DurableUn, arXiv 2605.02196): how many seeds of a method provably
keep their forgetting over a set of deployments D.

A seed is *durable* over D at tolerance epsilon when, at every deployment in D, the 95% upper
bounds of both forget reverts (VerbMem_f and KnowMem_f: the cells' own reverts and intervals,
:mod:`leaderboards.cell_scores`) are at or below epsilon; that is, its worst revert over D, taken
by upper bound, is within epsilon. The worst is by upper bound, not by point estimate, because a
certificate must bound every deployment: a smaller revert with a wider interval can reach
higher. A seed the data cannot certify (no cell at a deployment in D, a revert that is n/a, or a
revert without an interval, so without an upper bound) is ``n/a`` and never counted as durable;
a known upper bound above epsilon makes it ``not durable`` whatever else is missing. Unlike the
verdict, a point estimate never certifies: a certificate is a bound.

One rule for the board (a column of the ranking, per-seed detail in the Seeds table) and the
audit (a line of its report); its own module because it is one idea, read by both.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import replace

from harness_ext.errors import MuseQuantError, did_you_mean
from harness_ext.precision_names import precision_order
from leaderboards.scores import Certificate, ModelScores, SeedCertificate, SeedGroup
from leaderboards.verdicts import FORGET_METRICS, cell_at

DURABLE, NOT_DURABLE, UNKNOWN = "durable", "not durable", "n/a"

#: Stated on every board and report.
CERTIFICATE_RULE = (
    "A seed is durable over deployments D at tolerance epsilon (the revert tolerance) when the "
    "95% upper bounds of its VerbMem_f and KnowMem_f reverts are at or below epsilon at every "
    "deployment in D (its worst revert over D, by upper bound, is within epsilon); the "
    "certificate is the number of durable seeds of all the method's seeds (a method without "
    "seeds is one). A seed without a cell, a revert or an interval at a deployment in D cannot "
    "be certified (n/a) and never counts as durable. D is --certify, else every precision the "
    "method's seeds were evaluated at but full precision. The certificate bounds reverts only: "
    "read it with the verdict, which says whether the model forgot at full precision."
)


def epsilon_text(tolerance: float) -> str:
    """``0.10``; a tolerance two decimals cannot write exactly keeps its digits (``0.125``)."""
    two = f"{tolerance:.2f}"
    return two if float(two) == tolerance else f"{tolerance:g}"


def check_deployments(
    names: Sequence[str] | None, present: Collection[str], where: str = "in the results"
) -> None:
    """Refuse a deployment that is not ``present`` (the results' precisions, or an audit's),
    naming the closest one: a typo would otherwise certify every seed as n/a."""
    for name in names or ():
        if name not in present:
            raise MuseQuantError(
                f"--certify {name}: no such deployment {where}{did_you_mean(name, present)}; "
                f"present: {', '.join(sorted(present, key=precision_order))}"
            )


def check_not_full(names: Sequence[str] | None, full_precision: str) -> None:
    """Refuse certifying over the full precision: every revert is measured against it."""
    if names and full_precision in names:
        raise MuseQuantError(
            f"--certify {full_precision}: that is the full precision every revert is measured "
            "against (its revert is 0 by definition); name the deployments to certify over"
        )


def deployments_of(
    models: Sequence[ModelScores], full_precision: str, names: Sequence[str] | None = None
) -> tuple[str, ...]:
    """D as a set in P's order: ``names`` (repeats dropped), else every precision the models
    were evaluated at but ``full_precision``."""
    chosen = names if names is not None else [c.precision for m in models for c in m.cells]
    return tuple(sorted(set(chosen) - {full_precision}, key=precision_order))


def certify_seed(
    model: ModelScores, deployments: Sequence[str], tolerance: float
) -> SeedCertificate:
    """One seed's status over D and its worst upper bound (first in D's order on ties)."""
    bounds: list[tuple[float, str, str]] = []
    missing: list[str] = []
    for precision in deployments:
        cell = cell_at(model, precision)
        if cell is None:
            missing.append(f"no cell at {precision}")
            continue
        for name, score, _ in FORGET_METRICS:
            interval = cell.interval(f"revert_{score}")
            if getattr(cell, f"revert_{score}") is None:
                missing.append(f"{name} revert n/a at {precision}")
            elif interval is None:
                missing.append(f"no interval on the {name} revert at {precision}")
            else:
                bounds.append((interval[1], precision, name))
    if not deployments:
        missing.append("no deployment")
    worst = max(bounds, key=lambda bound: bound[0], default=None)
    status = (
        NOT_DURABLE if worst is not None and worst[0] > tolerance
        else UNKNOWN if missing
        else DURABLE
    )  # fmt: skip
    why = [f"cannot tell: {', '.join(missing)}"] if status == UNKNOWN else []
    if worst is not None:
        relation = ">" if worst[0] > tolerance else "<="
        why.append(
            f"worst{' known' if why else ''}: {worst[2]} revert at {worst[1]}, upper bound "
            f"{worst[0]:+.2f} {relation} {epsilon_text(tolerance)}"
        )
    text = f"{model.label}: {status}" + (f" ({'; '.join(why)})" if why else "")
    return SeedCertificate(
        label=model.label,
        seed=model.seed,
        status=status,
        worst_deployment=worst[1] if worst else None,
        worst_metric=worst[2] if worst else None,
        worst_upper=worst[0] if worst else None,
        missing=tuple(missing),
        text=text,
    )


def certify(
    models: Sequence[ModelScores], deployments: Sequence[str], tolerance: float
) -> Certificate:
    """The certificate of ``models`` (the seeds of one method, or one model) over D."""
    seeds = tuple(certify_seed(model, deployments, tolerance) for model in models)
    certified = sum(seed.status == DURABLE for seed in seeds)
    unknown = sum(seed.status == UNKNOWN for seed in seeds)
    text = (
        f"durable at ε={epsilon_text(tolerance)} over {{{', '.join(deployments)}}}: "
        f"{certified}/{len(seeds)} seed{'' if len(seeds) == 1 else 's'}"
        + (f" ({unknown} n/a)" if unknown else "")
    )
    return Certificate(tolerance, tuple(deployments), seeds, certified, unknown, text)


def certify_ranked(
    ranked: Sequence[ModelScores],
    groups: Sequence[SeedGroup],
    methods: Sequence[ModelScores],
    *,
    full_precision: str,
    names: Sequence[str] | None,
    tolerance: float,
) -> list[ModelScores]:
    """Each ranked method with the certificate of the seeds it stands for: its seed group's
    when it is the group's worst seed, else its own row (one seed); none when D is empty."""
    check_not_full(names, full_precision)
    by_label = {model.label: model for model in methods}
    members = {group.worst: [by_label[label] for label in group.labels] for group in groups}
    out = []
    for model in ranked:
        seeds = members.get(model.label, [model])
        deployments = deployments_of(seeds, full_precision, names)
        certificate = certify(seeds, deployments, tolerance) if deployments else None
        out.append(replace(model, certificate=certificate))
    return out
