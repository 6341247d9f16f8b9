"""The methods, as ``transformers.Trainer`` subclasses that only say their loss.

:class:`GradDiffTrainer` is gradient ascent on the forget batch plus an optional retain term
(GDR: NLL on the retain batch; KLR: KL to the frozen target on it). :class:`NPOTrainer` replaces
the forget term by NPO's; everything else (optimizer, schedule, clipping, loops) is the Trainer's.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import torch
from transformers import Trainer

from harness_ext.errors import MuseQuantError
from muse_quant.unlearning.losses import mean_nll, npo_loss, retain_kl, sequence_logprob

#: The unlearning methods by name (``--method``), each registered by :func:`method`.
TRAINERS: dict[str, type[GradDiffTrainer]] = {}


def method(name: str) -> Callable[[type[GradDiffTrainer]], type[GradDiffTrainer]]:
    """Register a trainer class as the method ``name``."""

    def register(cls: type[GradDiffTrainer]) -> type[GradDiffTrainer]:
        TRAINERS[name] = cls
        return cls

    return register


@method("ga")
class GradDiffTrainer(Trainer):
    """GA (+ GDR/KLR). ``reference`` is the frozen target, a callable entering a context in which
    a module computes the target's outputs (a frozen copy, or a peft model with its adapter off)."""

    def __init__(
        self,
        *args: Any,
        retain_loss: str,
        retain_weight: float,
        reference: Callable[[], contextlib.AbstractContextManager[torch.nn.Module]] | None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.retain_loss = retain_loss
        self.retain_weight = retain_weight
        self.reference = reference
        #: (forget term, retain term) of every step, for the progress bar and unlearn.json.
        self.term_history: list[tuple[float, float]] = []

    def forget_loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Gradient ascent: minimise the negated LM loss on the forget batch."""
        return -mean_nll(model, batch)

    def retain_term(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.retain_loss == "gdr":
            return mean_nll(model, batch)
        with self.reference() as reference:
            return retain_kl(model, reference, batch)

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, dict[str, torch.Tensor]],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> torch.Tensor:
        forget = self.forget_loss(model, inputs["forget"])
        if self.retain_loss == "none":
            retain = torch.zeros((), device=forget.device)
        else:
            retain = self.retain_term(model, inputs["retain"])
        loss = forget + self.retain_weight * retain
        if not math.isfinite(loss.item()):
            raise MuseQuantError(
                f"the loss became {loss.item()} at step {self.state.global_step + 1} "
                f"(forget {forget.item():.4g}, retain {retain.item():.4g}); nothing was saved. "
                "Lower --lr or use --param-dtype fp32"
            )
        self.term_history.append((forget.item(), retain.item()))
        return (loss, None) if return_outputs else loss


@method("npo")
class NPOTrainer(GradDiffTrainer):
    """Negative preference optimisation on sequence log-likelihoods against the frozen target."""

    def __init__(self, *args: Any, beta: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.beta = beta

    def forget_loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.no_grad(), self.reference() as reference:
            ref_logp = sequence_logprob(reference, batch)
        return npo_loss(sequence_logprob(model, batch), ref_logp, self.beta)
