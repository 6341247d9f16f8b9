"""SURE's module selection (Zhang et al., ICLR 2025): update only the forget-salient modules.

The seed paper's remedy for 4-bit quantization undoing unlearning is a learning rate large enough
that the update crosses 4-bit bins, confined to the modules the forget loss is most sensitive to,
so that the rest of the model (what utility rests on) stays exactly the target's. A module's
saliency is the norm of the forget loss's gradient with respect to its weight, summed over the
forget set; the paper keeps the modules above a threshold, we keep a fraction of them (the
threshold that selects it is recorded), which reads the same at every model size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from harness_ext.errors import MuseQuantError


def module_saliency(
    model: torch.nn.Module,
    names: list[str],
    forget_loss: Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor],
    batches: Iterable[dict[str, torch.Tensor]],
) -> dict[str, float]:
    """``{module: ||d forget loss / d weight||}``, the gradient summed over ``batches`` (autograd
    accumulates it in place: no memory beyond one training step's gradients)."""
    model.zero_grad(set_to_none=True)
    for batch in batches:
        forget_loss(model, batch).backward()
    saliency = {}
    for name in names:
        grad = model.get_submodule(name).weight.grad
        saliency[name] = float(grad.float().norm()) if grad is not None else 0.0
    model.zero_grad(set_to_none=True)
    return saliency


def most_salient(saliency: dict[str, float], fraction: float) -> list[str]:
    """The ``ceil(fraction * n)`` most salient modules (at least one), most salient first."""
    ranked = sorted(saliency, key=lambda name: -saliency[name])
    return ranked[: max(1, math.ceil(fraction * len(ranked)))]


def train_only(model: torch.nn.Module, modules: list[str]) -> None:
    """Freeze every parameter but the weights of ``modules`` (the optimizer then sees only
    those, so every other tensor is saved bit-identical to the target's)."""
    model.requires_grad_(False)
    for name in modules:
        model.get_submodule(name).weight.requires_grad_(True)


def select_and_freeze(
    model: torch.nn.Module,
    names: list[str],
    fraction: float,
    forget_loss: Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor],
    batches: Iterable[dict[str, torch.Tensor]],
) -> dict[str, Any]:
    """SURE before training: measure saliency, keep the top ``fraction``, freeze the rest; the
    record ``unlearn.json`` keeps (selected modules, threshold, every module's saliency)."""
    if not names:
        raise MuseQuantError("--salient-fraction: the model has no block linears to select from")
    saliency = module_saliency(model, names, forget_loss, batches)
    selected = most_salient(saliency, fraction)
    train_only(model, selected)
    return {
        "fraction": fraction,
        "selected": selected,
        "threshold": saliency[selected[-1]],
        "saliency": {name: round(value, 6) for name, value in saliency.items()},
    }
