"""What a board holds: its options and, per corpus, model and precision, the scores.

Plain data (the numbers, their intervals, the criteria, the verdicts); computed by
:mod:`leaderboards.robustness`, judged by :mod:`leaderboards.verdicts`, ordered by
:mod:`leaderboards.ranking`, shown by :mod:`leaderboards.render`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from harness_ext.errors import MuseQuantError, did_you_mean
from harness_ext.metrics.mia import ATTACKS
from harness_ext.precision_names import precision_order
from leaderboards.intervals import Interval

#: The attack of MUSE's published AUC_retrain (Min-40%), and the board's default.
PUBLISHED_ATTACK = "mink_40"

#: (name, what it checks) of MUSE's criteria, in order.
CRITERIA = (
    ("C1", "no verbatim memorization: VerbMem_f <= the retrain model's at the same precision"),
    ("C2", "no knowledge memorization: KnowMem_f <= the retrain model's at the same precision"),
    ("C3", "no privacy leakage: |PrivLeak| <= the tolerance"),
    ("C4", "utility kept: KnowMem_r >= the fraction x the target's at full precision"),
)


@dataclass(frozen=True)
class RobustnessOptions:
    """The board's tolerances and attack; defaults are MUSE's (docs/leaderboard.md)."""

    attack: str = PUBLISHED_ATTACK
    privleak_tolerance: float = 5.0
    utility_fraction: float = 0.9
    #: AUC_retrain to use when no retrain model is in the results (else MUSE's published one).
    retrain_auc: float | None = None
    #: Largest rise of a forget retention (absolute, 0.10 = 10 points of the target's score)
    #: that still counts as holding after quantization; also the certificate's epsilon.
    revert_tolerance: float = 0.10
    #: The deployments D of the durability certificate (:mod:`leaderboards.certificate`), as
    #: the results files name their precisions; None: every one a method was evaluated at
    #: but the full precision.
    certify: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        """Every option checked, NaN and infinity included, before any results file is read
        (the names in ``certify`` are checked against the results when they are read)."""
        if self.certify is not None:  # D is a set: stored once each, in P's order
            names = tuple(self.certify)
            if not names or not all(isinstance(n, str) and n.strip() for n in names):
                raise MuseQuantError(
                    f"--certify {','.join(map(str, names))!r}: give comma-separated deployment "
                    "names as the results files carry them, e.g. int8,nf4"
                )
            object.__setattr__(self, "certify", tuple(sorted(set(names), key=precision_order)))
        if self.attack not in ATTACKS:
            raise MuseQuantError(
                f"attack {self.attack!r}{did_you_mean(self.attack, ATTACKS)}: not a membership "
                f"attack the MUSE tasks score; --attack is one of {', '.join(ATTACKS)}"
            )
        for name, value, flag in (
            ("revert tolerance", self.revert_tolerance, "--revert-tolerance"),
            ("PrivLeak tolerance", self.privleak_tolerance, "--privleak-tolerance"),
        ):
            if not 0 <= value < math.inf:
                raise MuseQuantError(f"{name} {value}: must be >= 0 and finite ({flag})")
        if not 0 < self.utility_fraction <= 1:
            raise MuseQuantError(
                f"utility fraction {self.utility_fraction}: must be in (0, 1] "
                "(--utility-fraction: C4 asks KnowMem_r >= this x the target's)"
            )
        if self.retrain_auc is not None and not 0 < self.retrain_auc <= 1:
            raise MuseQuantError(
                f"retrain AUC {self.retrain_auc}: must be in (0, 1] (--retrain-auc is an AUC)"
            )


@dataclass(frozen=True)
class Criteria:
    """C1-C4 at one precision: True passed, False failed, None not computable (n/a)."""

    c1: bool | None
    c2: bool | None
    c3: bool | None
    c4: bool | None

    def marks(self) -> tuple[bool | None, ...]:
        return tuple(getattr(self, f.name) for f in fields(self))

    @property
    def passed(self) -> int:
        return sum(mark is True for mark in self.marks())

    @property
    def computable(self) -> int:
        return sum(mark is not None for mark in self.marks())


@dataclass(frozen=True)
class PrivLeakReference:
    """The AUC_retrain that PrivLeak is measured against at one precision, and where it is from."""

    precision: str
    auc: float
    #: ``retrain`` (the retrain model at this precision), ``given`` or ``published``.
    source: str
    description: str


@dataclass(frozen=True)
class CellScores:
    """One model at one precision. Retentions are fractions (1.0 = as much as the target at
    full precision); reverts are differences of retentions; None = n/a."""

    precision: str
    verbmem_f: float | None
    knowmem_f: float | None
    knowmem_r: float | None
    auc: float | None
    privleak: float | None
    privleak_reference: str | None
    retention_verbmem_f: float | None
    retention_knowmem_f: float | None
    forget_retention: float | None
    revert_verbmem_f: float | None
    revert_knowmem_f: float | None
    utility_retention: float | None
    criteria: Criteria
    source: str
    #: 95% intervals (:mod:`leaderboards.intervals`) by field name (``verbmem_f``,
    #: ``revert_knowmem_f``, ...), for the fields whose per-document scores are known.
    intervals: Mapping[str, Interval] = field(default_factory=dict, hash=False)

    def interval(self, name: str) -> Interval | None:
        return self.intervals.get(name)


#: What follows the label of a model evaluated from a GGUF file, in its rows and its note.
GGUF_MARKER = " [GGUF]"


@dataclass(frozen=True)
class GgufMark:
    """What the board says of a model evaluated from a GGUF file: the file(s) its rows name (a
    sha256 and ``general.file_type`` each) and that sentence. Reads as its sentence (``str()``,
    the CSV cell)."""

    sha256: tuple[str, ...]
    file_types: tuple[str | None, ...]
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class ModelScores:
    """One model on one corpus across precisions, with the worst cases the ranking reads."""

    label: str
    role: str
    method: str | None
    mode: str | None
    cells: tuple[CellScores, ...]
    missing_precisions: tuple[str, ...]
    worst_precision: str
    criteria_passed: int
    criteria_computable: int
    worst_forget_retention: float | None
    worst_utility_retention: float | None
    #: 1 = best; None for the reference models (target, retrain), which are not ranked.
    rank: int | None = None
    #: The verdict (:mod:`leaderboards.verdicts`): ``holds``, ``reverts``, ``inconclusive``,
    #: or the full-precision gate's ``never forgot`` / ``lost utility``; and its sentence.
    verdict: str | None = None
    verdict_text: str | None = None
    #: The largest revert over the quantized precisions and forget metrics, where, and its
    #: interval (None when unknown).
    worst_revert: float | None = None
    worst_revert_precision: str | None = None
    worst_revert_interval: Interval | None = None
    #: The worst-case utility retention's interval.
    worst_utility_interval: Interval | None = None
    #: The unlearning seed its results files record (None: not said).
    seed: int | None = None
    #: The durability certificate of the seeds this row stands for in the ranking (its seed
    #: group's when it is the group's worst seed, else its own row); None for the references,
    #: the other seeds, and a method with no deployment to certify over.
    certificate: Certificate | None = None
    #: The GGUF file the model was evaluated from (None: a Hugging Face checkpoint): the board
    #: marks its row and says so in a note.
    gguf: GgufMark | None = None


@dataclass(frozen=True)
class SeedCertificate:
    """One seed under the durability certificate: ``durable`` (every forget revert over D has
    its 95% upper bound at or below epsilon), ``not durable`` (one does not) or ``n/a`` (the
    data cannot tell: a cell or an interval in D is missing), and where its worst bound is."""

    label: str
    seed: int | None
    status: str
    #: The deployment and forget metric of the largest known upper bound over D, and that
    #: bound (None when no bound is known).
    worst_deployment: str | None
    worst_metric: str | None
    worst_upper: float | None
    #: What the data lack in D (``no cell at nf4``, ...): why a seed is n/a.
    missing: tuple[str, ...]
    text: str


@dataclass(frozen=True)
class Certificate:
    """The durability certificate of a seed group over deployments D at tolerance epsilon:
    ``certified`` of ``len(seeds)`` seeds are durable, ``unknown`` cannot be told. Reads as its
    sentence (``str()``, so the CSV cell is the sentence too)."""

    tolerance: float
    deployments: tuple[str, ...]
    seeds: tuple[SeedCertificate, ...]
    certified: int
    unknown: int
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class SeedGroup:
    """One method (and mode) unlearned with several seeds: how it fares across them. The
    ranking ranks the group by its worst seed (the one that ranks last)."""

    method: str
    mode: str | None
    #: The seeds' labels and seeds, in seed order.
    labels: tuple[str, ...]
    seeds: tuple[int, ...]
    #: The mean over seeds of the worst revert (None when a seed's is unknown).
    mean_worst_revert: float | None
    #: The label of the worst seed.
    worst: str
    #: The fraction of seeds whose verdict is ``holds`` (forgetting holds at every quantized
    #: precision): the durability rate.
    durability: float


@dataclass(frozen=True)
class CorpusBoard:
    """Everything a board shows for one corpus: P, references, ranked methods, notes."""

    corpus: str
    data: str | None
    precisions: tuple[str, ...]
    full_precision: str
    target: str
    retrain: str | None
    privleak_references: tuple[PrivLeakReference, ...]
    methods: tuple[ModelScores, ...]
    references: tuple[ModelScores, ...]
    notes: tuple[str, ...]
    #: Methods run with several seeds, and the seeds other than each group's worst (which is
    #: in ``methods``); unranked.
    seed_groups: tuple[SeedGroup, ...] = ()
    other_seeds: tuple[ModelScores, ...] = ()

    @property
    def models(self) -> tuple[ModelScores, ...]:
        """Every model of the corpus: ranked methods, other seeds, then the references."""
        return self.methods + self.other_seeds + self.references


@dataclass(frozen=True)
class Board:
    """A whole leaderboard: options, one :class:`CorpusBoard` per corpus, files read, warnings."""

    options: RobustnessOptions
    corpora: tuple[CorpusBoard, ...]
    sources: tuple[str, ...]
    warnings: tuple[str, ...]
