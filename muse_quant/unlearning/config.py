"""What an unlearning run is: method, retain term, mode, and hyperparameters (one dataclass).

Defaults are the papers' settings for 7B models (MUSE baselines; Abitante et al. for LoRA); the toy
world has its own presets in :mod:`muse_quant.toyworld.zoo`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from harness_ext.errors import MuseQuantError

RETAIN_LOSSES = ("none", "gdr", "klr")
MODES = ("full", "lora")
#: bf16: AdamW updates bfloat16 parameters in place, as MUSE's baselines do (updates below half a
#: bf16 ulp round away); fp32: float32 master weights (saved as float32).
PARAM_DTYPES = ("bf16", "fp32")
#: The 4-bit schemes a quantization-aware run can compute through (``--quant-aware``).
QUANT_AWARE = ("nf4",)
#: Every numeric hyperparameter's range: field -> (the check, the range and why, as the error
#: says it). NaN and infinity fail every check.
RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    "lr": (lambda v: 0 < v < math.inf, "> 0 (a learning rate)"),
    "max_steps": (lambda v: 1 <= v < math.inf, ">= 1 (optimizer steps)"),
    "batch_size": (lambda v: 1 <= v < math.inf, ">= 1 (forget/retain pairs per step)"),
    "retain_weight": (
        lambda v: 0 <= v < math.inf, ">= 0 (a negative weight ascends the retain loss)"
    ),
    "beta": (lambda v: 0 < v < math.inf, "> 0 (NPO divides by it)"),
    "max_length": (lambda v: 2 <= v < math.inf, ">= 2 (a chunk needs a token to predict)"),
    "lora_r": (lambda v: 1 <= v < math.inf, ">= 1 (a rank)"),
    "lora_alpha": (lambda v: 0 < v < math.inf, "> 0 (the adapter's scale is alpha / r)"),
    "lora_dropout": (lambda v: 0 <= v < 1, "in [0, 1) (a probability; 1 drops everything)"),
    "seed": (lambda v: 0 <= v <= 2**32 - 1, "in [0, 2**32 - 1] (the seeds numpy takes)"),
    "check_every": (lambda v: 0 <= v < math.inf, ">= 0 (steps between checks; 0: off)"),
    "stop_verbmem": (lambda v: 0 <= v <= 1, "in [0, 1] (a ROUGE-L score)"),
    "stop_knowmem": (lambda v: 0 <= v <= 1, "in [0, 1] (a ROUGE-L score)"),
    "salient_fraction": (lambda v: 0 < v <= 1, "in (0, 1] (a fraction of the block linears)"),
}
#: Paper defaults that differ between modes.
MODE_DEFAULTS: dict[str, dict[str, Any]] = {"full": {"lr": 1e-5}, "lora": {"lr": 1e-4}}


@dataclass(frozen=True)
class UnlearnConfig:
    """One unlearning run. ``lr=None`` takes the mode's paper default (full 1e-5, LoRA 1e-4)."""

    method: str = "npo"
    retain_loss: str = "gdr"
    mode: str = "full"
    lr: float | None = None
    max_steps: int = 100
    batch_size: int = 4
    retain_weight: float = 1.0
    beta: float = 0.1
    param_dtype: str = "bf16"
    max_length: int = 512
    lora_r: int = 32
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    seed: int = 0
    retain_splits: tuple[str, ...] = ("retain1",)
    #: Early stopping: every ``check_every`` steps (0 = never), stop once forget verbatim ROUGE-L
    #: (0..1) is at or below ``stop_verbmem`` and, if ``stop_knowmem`` is set, forget QA ROUGE-L
    #: at or below it too.
    check_every: int = 0
    stop_verbmem: float = 0.0
    stop_knowmem: float | None = None
    #: SURE (full mode): train only this fraction of the block linears, the most salient for the
    #: forget loss (``muse_quant.unlearning.saliency``); None trains every parameter.
    salient_fraction: float | None = None
    #: Quantization-aware (full mode): compute every step through the weights rounded to this
    #: scheme, gradients passed straight through (``muse_quant.unlearning.quant_aware``).
    quant_aware: str | None = None

    def __post_init__(self) -> None:
        # The methods are the registered trainers (transformers' Trainer loads slowly).
        from muse_quant.unlearning.trainers import TRAINERS

        for name, value, allowed in (
            ("method", self.method, tuple(TRAINERS)),
            ("retain loss", self.retain_loss, RETAIN_LOSSES),
            ("mode", self.mode, MODES),
            ("param dtype", self.param_dtype, PARAM_DTYPES),
        ):
            if value not in allowed:
                raise MuseQuantError(
                    f"unknown {name} {value!r}; choose one of {', '.join(allowed)}"
                )
        if self.quant_aware is not None and self.quant_aware not in QUANT_AWARE:
            raise MuseQuantError(
                f"unknown quant-aware scheme {self.quant_aware!r}; choose one of "
                f"{', '.join(QUANT_AWARE)}"
            )
        for flag, value in (("salient-fraction", self.salient_fraction),
                            ("quant-aware", self.quant_aware)):  # fmt: skip
            if value is not None and self.mode != "full":
                raise MuseQuantError(
                    f"--{flag} is for --mode full: a LoRA run trains its adapter, not the "
                    "weights it selects or rounds"
                )
        if self.lr is None:
            object.__setattr__(self, "lr", MODE_DEFAULTS[self.mode]["lr"])
        self._check_ranges()
        if not self.check_every and (self.stop_verbmem != 0.0 or self.stop_knowmem is not None):
            raise MuseQuantError(
                "an early-stopping threshold (--stop-verbmem, --stop-knowmem) needs "
                "--check-every N, how often to score the forget set; without it nothing is "
                "checked and the run never stops early"
            )
        if not self.retain_splits:
            raise MuseQuantError("retain splits: none given; the retain term needs one (retain1)")

    def _check_ranges(self) -> None:
        for name, (within, expected) in RANGES.items():
            value = getattr(self, name)
            if value is not None and not within(value):
                raise MuseQuantError(f"--{name.replace('_', '-')} {value}: must be {expected}")

    @property
    def name(self) -> str:
        """``GA+GDR`` style label used on boards."""
        retain = "" if self.retain_loss == "none" else f"+{self.retain_loss.upper()}"
        sure = "+SURE" if self.salient_fraction is not None else ""
        aware = f"+QA-{self.quant_aware.upper()}" if self.quant_aware else ""
        return f"{self.method.upper()}{retain}{sure}{aware}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
