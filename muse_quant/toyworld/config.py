"""The toy world's configuration: one frozen dataclass per part, four named scales, one hash.

The hash keys the on-disk cache: the same configuration reuses a built world, any change builds
anew. Library versions are recorded in the manifest but are not part of the key. Three scales
pretrain a small Llama of their own; the ``real`` scale fine-tunes a pretrained base instead,
named in the configuration by its content (``PretrainedBase``), so the same file or folder found
elsewhere reuses the world and changed weights build a new one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace

from harness_ext.errors import MuseQuantError
from model_wrappers.training import TrainPhase
from muse_quant.toyworld.corpus import CorpusSizes

#: Bump when the builder changes what a configuration produces, so stale caches rebuild.
BUILDER_VERSION = 3


@dataclass(frozen=True)
class ModelShape:
    """A small Llama; linear widths are multiples of 128 so 4-bit group-128 kernels apply."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int
    context: int = 512


@dataclass(frozen=True)
class PretrainedBase:
    """The pretrained model a ``real`` world starts from, by content: a known base's name or the
    file or folder's name, and the sha256 of its GGUF file or of its folder's files."""

    label: str
    sha256: str


@dataclass(frozen=True)
class MemorizationGoal:
    """When the target has memorized: forget VerbMem and forget KnowMem (greedy ROUGE-L F1, 0..1)
    at least these, checked after every epoch; fine-tuning stops at the first epoch that meets
    both, and the retrain model trains as many epochs."""

    verbmem_forget: float
    knowmem_forget: float


@dataclass(frozen=True)
class ToyWorldConfig:
    scale: str
    seed: int
    sizes: CorpusSizes
    #: The model pretrained from scratch, or None where the world starts from ``base``.
    shape: ModelShape | None
    pretrain: TrainPhase | None
    #: For a world on a pretrained base: ``epochs`` is the most the target trains, ``goal`` says
    #: when it stops.
    finetune: TrainPhase
    base: PretrainedBase | None = None
    goal: MemorizationGoal | None = None
    builder_version: int = field(default=BUILDER_VERSION)

    def __post_init__(self) -> None:
        own_model = self.shape is not None and self.pretrain is not None
        if own_model == (self.scale in PRETRAINED_SCALES):
            raise ValueError(f"scale {self.scale}: a shape and pretraining, or a pretrained base")

    def to_dict(self) -> dict:
        return asdict(self)

    def config_hash(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()


#: The scales that fine-tune a pretrained base (``toyworld build --base``) instead of pretraining.
PRETRAINED_SCALES = ("real",)

SCALES: dict[str, ToyWorldConfig] = {
    # The test suite's world: half the tiny world's people, one block, a 512-token vocabulary.
    # Built in about 35 s on one core; its target still memorizes (forget VerbMem 0.98, forget
    # KnowMem 0.70 by the greedy check) and its retrain model does not (0.15, 0.00).
    "micro": ToyWorldConfig(
        scale="micro",
        seed=0,
        sizes=CorpusSizes(forget=8, retain=8, holdout=8, generic=24),
        shape=ModelShape(hidden=128, layers=1, heads=4, intermediate=256, vocab=512),
        pretrain=TrainPhase(epochs=10, lr=2e-3),
        finetune=TrainPhase(epochs=30, lr=2e-3, warmup_steps=5),
    ),
    "tiny": ToyWorldConfig(
        scale="tiny",
        seed=0,
        sizes=CorpusSizes(forget=16, retain=16, holdout=16, generic=48),
        shape=ModelShape(hidden=128, layers=2, heads=4, intermediate=256, vocab=1024),
        pretrain=TrainPhase(epochs=10, lr=2e-3),
        finetune=TrainPhase(epochs=30, lr=2e-3, warmup_steps=5),
    ),
    "default": ToyWorldConfig(
        scale="default",
        seed=0,
        sizes=CorpusSizes(forget=32, retain=32, holdout=32, generic=96),
        shape=ModelShape(hidden=256, layers=4, heads=4, intermediate=768, vocab=2048),
        pretrain=TrainPhase(epochs=10, lr=1e-3),
        finetune=TrainPhase(epochs=30, lr=1e-3, warmup_steps=10),
    ),
    # MUSE's own protocol on a pretrained model (SmolLM2-135M by default): no pretraining, the
    # base's own tokenizer, the target fine-tuned on forget + retain until it memorizes.
    "real": ToyWorldConfig(
        scale="real",
        seed=0,
        sizes=CorpusSizes(forget=8, retain=8, holdout=8, generic=0),
        shape=None,
        pretrain=None,
        finetune=TrainPhase(epochs=20, lr=5e-4, batch_size=4, warmup_steps=8),
        goal=MemorizationGoal(verbmem_forget=0.5, knowmem_forget=0.5),
    ),
}


#: The scales that pretrain their own model: the demo's and the zoo's (whose presets are tuned
#: for toy models).
TOY_SCALES = [scale for scale in SCALES if scale not in PRETRAINED_SCALES]


def config_for(scale: str, **overrides: object) -> ToyWorldConfig:
    """The named scale's configuration, with top-level fields replaced (tests use ``seed=``; a
    ``real`` world needs ``base=``)."""
    if scale not in SCALES:
        raise MuseQuantError(f"unknown scale {scale!r}; choose one of: {', '.join(SCALES)}")
    return replace(SCALES[scale], **overrides)
