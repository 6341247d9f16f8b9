"""95% bootstrap intervals over documents for every number a board or an audit shows.

With 16-100 documents per task, differences of several points are noise; every interval here is
``scipy.stats.bootstrap`` (percentile method, :data:`N_RESAMPLES` resamples, seeded with
:data:`SEED`, so a board is reproducible). What is resampled:

- a memorization score (VerbMem_f, KnowMem_f, KnowMem_r): its documents;
- a retention (score / the target's at full precision): the documents, *paired* (the same
  documents resampled for both models);
- a revert (retention at p - retention at full precision): the documents, paired across the
  model at p, the model at full precision and the target;
- the PrivLeak AUC: the texts, forget and holdout resampled separately (PrivLeak's interval is
  the AUC's, mapped through PrivLeak's formula with the reference AUC held fixed).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np

CONFIDENCE = 0.95
N_RESAMPLES = 2000
SEED = 12345
METHOD = "percentile"
#: Stated on every board and report.
DESCRIPTION = (
    f"{CONFIDENCE:.0%} bootstrap intervals over documents (scipy.stats.bootstrap, {METHOD}, "
    f"{N_RESAMPLES} resamples, seed {SEED}); retentions and reverts resample the same "
    "documents for every model they compare (paired); the PrivLeak AUC resamples forget and "
    "holdout texts separately"
)

Interval = tuple[float, float]


def _bootstrap(
    samples: Sequence[np.ndarray], statistic: Callable[..., np.ndarray], paired: bool
) -> Interval | None:
    from scipy.stats import bootstrap  # scipy.stats takes ~1 s to import

    if any(len(s) < 2 for s in samples):
        return None
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore")  # degenerate data: every resample equal
        result = bootstrap(
            tuple(samples),
            statistic,
            paired=paired,
            vectorized=True,
            axis=-1,
            n_resamples=N_RESAMPLES,
            confidence_level=CONFIDENCE,
            method=METHOD,
            rng=np.random.default_rng(SEED),
        )
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    return (low, high) if np.isfinite(low) and np.isfinite(high) else None


def _array(values: Sequence[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)


def mean_interval(scores: Sequence[float]) -> Interval | None:
    """The mean score's interval (documents resampled)."""
    return _bootstrap([_array(scores)], lambda x, axis: x.mean(axis=axis), paired=False)


def retention_interval(scores: Sequence[float], target: Sequence[float]) -> Interval | None:
    """``mean(scores) / mean(target)`` over the same documents, resampled in pairs."""
    if len(scores) != len(target):
        return None
    return _bootstrap(
        [_array(scores), _array(target)],
        lambda x, t, axis: x.mean(axis=axis) / t.mean(axis=axis),
        paired=True,
    )


def revert_interval(
    at_p: Sequence[float],
    at_full: Sequence[float],
    target: Sequence[float],
    *,
    paired: bool = True,
) -> Interval | None:
    """``(mean(at_p) - mean(at_full)) / mean(target)``: retention at p minus retention at full
    precision. ``paired`` resamples the same documents for the three (the default, and right:
    they are the same documents); ``paired=False`` resamples each on its own, which ignores
    their correlation and gives a wider interval."""
    if paired and not len(at_p) == len(at_full) == len(target):
        return None
    return _bootstrap(
        [_array(at_p), _array(at_full), _array(target)],
        lambda p, f, t, axis: (p.mean(axis=axis) - f.mean(axis=axis)) / t.mean(axis=axis),
        paired=paired,
    )


def auc_statistic(forget: np.ndarray, holdout: np.ndarray, axis: int = -1) -> np.ndarray:
    """MUSE's forget-vs-holdout AUC (forget labelled 0, holdout 1, ROC on ``-score``), for
    batches of resamples: the chance that a holdout text scores below a forget text, ties half."""
    f = np.moveaxis(forget, axis, -1)[..., :, None]
    h = np.moveaxis(holdout, axis, -1)[..., None, :]
    return (h < f).mean(axis=(-1, -2)) + 0.5 * (h == f).mean(axis=(-1, -2))


def auc_interval(forget: Sequence[float], holdout: Sequence[float]) -> Interval | None:
    """The AUC's interval, forget and holdout texts resampled separately."""
    return _bootstrap([_array(forget), _array(holdout)], auc_statistic, paired=False)


def overlap(a: Interval | None, b: Interval | None) -> bool:
    """Whether two intervals share a point (an unknown interval overlaps everything)."""
    return a is None or b is None or (a[0] <= b[1] and b[0] <= a[1])
