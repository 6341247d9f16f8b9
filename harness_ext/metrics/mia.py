"""Membership-inference attacks for PrivLeak, each scoring one text from its token statistics.

Every score points the same way: **higher = looks more like a non-member**, so MUSE's AUC
convention (forget = 0, holdout = 1, ROC on ``-score``) applies to all of them unchanged.

Definitions follow MUSE's ``metrics/privleak.py`` (loss, zlib, lowercase, Min-K%); Min-K%++
(Zhang et al. 2024) follows open-unlearning's ``MinKPlusPlusAttack``. Attacks live in a registry,
open-unlearning style: a small class with ``setup`` (its parameters), ``needs`` (which outputs of
the forward pass it reads, so a caller computes only those) and ``score`` (one text -> float).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from harness_ext.errors import MuseQuantError

#: The Min-K% ratios MUSE reports (docs/tasks.md); ``mink_40`` is PrivLeak's default.
MINK_RATIOS: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
DEFAULT_ATTACK = "mink_40"

#: Min-K%++ divides by the vocabulary std; a near one-hot distribution makes it ~0. Flooring it at
#: 1e-3 is open-unlearning's ``clamp(variance, min=1e-6)``.
SIGMA_FLOOR = 1e-3


def _vector(name: str, values: Any, length: int | None = None) -> np.ndarray:
    """A finite, non-empty 1-D float64 array, or a one-line error saying what is wrong."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise MuseQuantError(
            f"{name}: need a non-empty 1-D array, got shape {arr.shape} "
            "(a text needs at least one token after BOS)"
        )
    if length is not None and arr.size != length:
        raise MuseQuantError(
            f"{name}: length {arr.size} != {length} log-probs; one value per position"
        )
    if not np.all(np.isfinite(arr)):
        raise MuseQuantError(
            f"{name}: contains NaN or inf; the forward pass gave non-finite values "
            "(check the model's precision / quantization)"
        )
    return arr


@dataclass
class TokenStats:
    """What the attacks need from one text's forward pass(es), all in float32 or wider.

    ``logprobs[i]`` is log p(token i+1 | tokens <= i) for the text tokenized with BOS (n tokens ->
    n-1 values). ``mu[i]``/``sigma[i]`` are the mean and std of log p over the vocabulary under the
    model's own distribution at that position (Min-K%++). ``lowercase_logprobs`` are the log-probs
    of ``text.lower()`` (its own length); None when that second pass was not run.
    """

    logprobs: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray
    text: str
    lowercase_logprobs: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.logprobs = _vector("logprobs", self.logprobs)
        self.mu = _vector("mu", self.mu, self.logprobs.size)
        self.sigma = _vector("sigma", self.sigma, self.logprobs.size)
        if self.lowercase_logprobs is not None:
            self.lowercase_logprobs = _vector("lowercase_logprobs", self.lowercase_logprobs)


def _check_ratio(k: float) -> float:
    if not 0.0 < k <= 1.0:
        raise MuseQuantError(f"Min-K% ratio k={k} must be in (0, 1]")
    return k


def _count(n: int, k: float) -> int:
    """How many lowest values Min-K% keeps: MUSE's ``int(n * k)``, but at least one.

    MUSE takes ``np.mean`` of an empty slice when ``int(n * k) == 0`` (NaN, which then breaks its
    ROC); for every text where MUSE gives a number, this gives the same number.
    """
    return max(1, int(n * _check_ratio(k)))


def mink_score(logprobs: np.ndarray, k: float) -> float:
    """Min-K% Prob: ``-mean`` of the ``max(1, int(len * k))`` lowest token log-probs."""
    values = _vector("logprobs", logprobs)
    return -float(np.mean(np.sort(values)[: _count(values.size, k)]))


def minkpp_score(logprobs: np.ndarray, mu: np.ndarray, sigma: np.ndarray, k: float) -> float:
    """Min-K%++: Min-K% over ``z = (logprob - mu) / max(sigma, SIGMA_FLOOR)``, not log-probs."""
    lp = _vector("logprobs", logprobs)
    mu, sigma = _vector("mu", mu, lp.size), _vector("sigma", sigma, lp.size)
    return mink_score((lp - mu) / np.maximum(sigma, SIGMA_FLOOR), k)


def _loss(logprobs: np.ndarray) -> float:
    """Mean NLL per token: what a causal LM's ``loss`` is, MUSE's "PPL" score."""
    return -float(np.mean(logprobs))


class Attack:
    """One membership-inference attack. Subclasses set ``needs`` and override ``score``."""

    #: TokenStats fields ``score`` reads besides ``logprobs``/``text``; all_mia_scores skips the
    #: attack when an optional one is None, and a caller runs the extra pass only if asked.
    needs: ClassVar[tuple[str, ...]] = ()

    def setup(self, **params: float) -> None:
        """Fix the attack's parameters; the default attack has none."""
        if params:
            raise MuseQuantError(f"{type(self).__name__} takes no parameters, got {sorted(params)}")

    def score(self, stats: TokenStats) -> float:
        raise NotImplementedError


class LossAttack(Attack):
    """Mean NLL (Yeom et al.): members are predicted better."""

    def score(self, stats: TokenStats) -> float:
        return _loss(stats.logprobs)


class ZlibAttack(Attack):
    """MUSE's "PPL/zlib": mean NLL / zlib-compressed UTF-8 length of the text (Carlini et al.)."""

    def score(self, stats: TokenStats) -> float:
        return _loss(stats.logprobs) / len(zlib.compress(stats.text.encode("utf-8")))


class LowercaseAttack(Attack):
    """MUSE's "PPL/lower": mean NLL of the text / mean NLL of its lowercase (Carlini et al.)."""

    needs = ("lowercase_logprobs",)

    def score(self, stats: TokenStats) -> float:
        if stats.lowercase_logprobs is None:
            raise MuseQuantError("lowercase attack needs lowercase_logprobs (of text.lower())")
        lower = _loss(stats.lowercase_logprobs)
        if lower <= 0.0:
            raise MuseQuantError(
                "lowercase attack: the lowercased text has zero loss, so the ratio is undefined"
            )
        return _loss(stats.logprobs) / lower


class MinKAttack(Attack):
    """Min-K% Prob (Shi et al. 2024), MUSE's PrivLeak score."""

    def setup(self, k: float = 0.4) -> None:
        self.k = _check_ratio(k)

    def score(self, stats: TokenStats) -> float:
        return mink_score(stats.logprobs, self.k)


class MinKPlusPlusAttack(MinKAttack):
    """Min-K%++ (Zhang et al. 2024): Min-K% over log-probs standardised by the vocabulary."""

    needs = ("mu", "sigma")

    def score(self, stats: TokenStats) -> float:
        return minkpp_score(stats.logprobs, stats.mu, stats.sigma, self.k)


#: name -> ready attack instance (parameters fixed by ``setup``).
ATTACKS: dict[str, Attack] = {}


def register(name: str, attack: type[Attack], **params: float) -> None:
    """Add an attack under ``name``; parametrised variants register the same class twice."""
    if name in ATTACKS:
        raise MuseQuantError(f"MIA attack {name!r} is already registered")
    instance = attack()
    instance.setup(**params)
    ATTACKS[name] = instance


register("loss", LossAttack)
register("zlib", ZlibAttack)
register("lowercase", LowercaseAttack)
for _k in MINK_RATIOS:
    register(f"mink_{round(_k * 100)}", MinKAttack, k=_k)
    register(f"mink++_{round(_k * 100)}", MinKPlusPlusAttack, k=_k)


def all_mia_scores(stats: TokenStats) -> dict[str, float]:
    """Every registered attack's score for one text, by name (higher = more like a non-member).

    An attack whose optional input is missing (``lowercase`` without ``lowercase_logprobs``) is
    left out rather than guessed, so its key is absent for the whole run.
    """
    return {
        name: attack.score(stats)
        for name, attack in ATTACKS.items()
        if all(getattr(stats, field) is not None for field in attack.needs)
    }
