"""Pruning as a deployment step: magnitude (unstructured per layer, or N of every M) and Wanda.

Every linear layer of the decoder blocks is pruned (the embeddings and the output head are not,
as in Wanda and SparseGPT), in float32 before any quantization, so ``wanda-50+nf4`` quantizes the
pruned weights. Names give the pattern: ``-50`` prunes 50% of the weights, ``-2of4`` keeps the 2
largest-scoring of every 4 consecutive weights of a row (NVIDIA's 2:4 semi-structured sparsity).

- Magnitude: a weight's score is ``|W|``; the unstructured kind prunes the lowest-scoring share of
  each layer.
- Wanda (Sun et al., 2023, "A Simple and Effective Pruning Approach for Large Language Models"):
  a weight's score is ``|W_ij| * ||X_j||_2``, the norm of input feature ``j`` over every token of
  the calibration texts; the unstructured kind compares weights within each output row. Inputs
  are measured block by block on the model whose earlier blocks are already pruned, as the paper
  does.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import AutoTokenizer

from model_wrappers.precisions.base import Deployment, Option, StepContext, StepEntry, positive_int

WANDA_OPTIONS = {
    "calibration_size": Option(256, positive_int, "at most this many calibration texts"),
}


def magnitude_mask(score: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask pruning the ``sparsity`` share of lowest scores of the whole tensor (rounded
    to the nearest count; ties pruned in index order)."""
    flat = score.flatten()
    pruned = round(sparsity * flat.numel())
    keep = torch.ones_like(flat, dtype=torch.bool)
    keep[torch.argsort(flat, stable=True)[:pruned]] = False
    return keep.reshape(score.shape)


def row_mask(score: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask pruning the ``sparsity`` share of lowest scores of every row."""
    pruned = round(sparsity * score.shape[1])
    keep = torch.ones_like(score, dtype=torch.bool)
    order = torch.argsort(score, dim=1, stable=True)[:, :pruned]
    return keep.scatter(1, order, False)


def n_of_m_mask(score: torch.Tensor, keep: int, group: int) -> torch.Tensor:
    """Keep-mask keeping the ``keep`` highest scores of every ``group`` consecutive weights of a
    row (ties kept in index order)."""
    rows, cols = score.shape
    if cols % group:
        raise ValueError(f"a row of {cols} weights does not split into groups of {group}")
    groups = score.reshape(rows, cols // group, group)
    order = torch.argsort(groups, dim=2, stable=True, descending=True)[..., :keep]
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter(2, order, True)
    return mask.reshape(rows, cols)


def _mask(step: Deployment, score: torch.Tensor, per_row: bool) -> torch.Tensor:
    if "group" in step.params:
        return n_of_m_mask(score, step.params["keep"], step.params["group"])
    sparsity = step.params["sparsity"] / 100
    return row_mask(score, sparsity) if per_row else magnitude_mask(score, sparsity)


def decoder_blocks(model: nn.Module) -> nn.ModuleList:
    """The model's decoder blocks: the module list with one entry per hidden layer."""
    layers = model.config.num_hidden_layers
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == layers:
            return module
    raise ValueError(f"no list of {layers} decoder blocks in {type(model).__name__}")


def _linears(block: nn.Module, prefix: str) -> dict[str, nn.Linear]:
    return {
        f"{prefix}.{name}": module
        for name, module in block.named_modules()
        if isinstance(module, nn.Linear)
    }


def _prune(linear: nn.Linear, keep: torch.Tensor) -> float:
    """Zero the weights ``keep`` drops; the sparsity reached."""
    with torch.no_grad():
        linear.weight.mul_(keep.to(linear.weight.dtype))
    return float((linear.weight == 0).float().mean())


def _record(step: Deployment, reached: dict[str, float], sizes: dict[str, int]) -> dict[str, Any]:
    overall = sum(reached[n] * sizes[n] for n in reached) / sum(sizes.values())
    if "group" in step.params:
        pattern = f"keep {step.params['keep']} of every {step.params['group']}"
    else:
        pattern = f"{step.params['sparsity']}% unstructured"
    return {"pattern": pattern, "sparsity": overall, "sparsity_per_layer": reached}


def prune_magnitude(model: nn.Module, step: Deployment, context: StepContext) -> dict[str, Any]:
    """Magnitude pruning (module docstring)."""
    reached, sizes = {}, {}
    for i, block in enumerate(decoder_blocks(model)):
        for name, linear in _linears(block, f"layers.{i}").items():
            sizes[name] = linear.weight.numel()
            reached[name] = _prune(linear, _mask(step, linear.weight.detach().abs(), False))
    return {"method": "magnitude", **_record(step, reached, sizes)}


class _Stop(Exception):
    """Raised after the block being measured: the rest of the forward pass is not needed."""


def input_norms(
    model: nn.Module, block: nn.Module, linears: dict[str, nn.Linear], ids: list[torch.Tensor]
) -> dict[str, torch.Tensor]:
    """``||X_j||_2`` of every input feature of each of ``linears`` (inside ``block``), over every
    token of ``ids`` (one text per forward pass, so no padding is counted)."""
    squares = {name: torch.zeros(m.in_features, dtype=torch.float64) for name, m in linears.items()}

    def measure(name: str):
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0].detach().to(torch.float64).reshape(-1, module.in_features)
            squares[name] += x.pow(2).sum(0).cpu()

        return hook

    def stop(module: nn.Module, args: Any, output: Any) -> None:
        raise _Stop

    handles = [m.register_forward_pre_hook(measure(n)) for n, m in linears.items()]
    handles.append(block.register_forward_hook(stop))
    try:
        with torch.no_grad():
            for row in ids:
                try:
                    model(input_ids=row.unsqueeze(0).to(model.device))
                except _Stop:
                    pass
    finally:
        for handle in handles:
            handle.remove()
    return {name: total.sqrt().float() for name, total in squares.items()}


def prune_wanda(model: nn.Module, step: Deployment, context: StepContext) -> dict[str, Any]:
    """Wanda (module docstring), on the precision's calibration texts."""
    assert context.calibration is not None  # resolved for every calibrated step
    texts = context.calibration.texts[: step.options["calibration_size"]]
    tokenizer = AutoTokenizer.from_pretrained(str(context.folder))
    width = model.config.max_position_embeddings
    ids = [torch.tensor(tokenizer(t)["input_ids"][:width]) for t in texts]
    reached, sizes = {}, {}
    model.eval()
    for i, block in enumerate(decoder_blocks(model)):
        linears = _linears(block, f"layers.{i}")
        norms = input_norms(model, block, linears, ids)
        for name, linear in linears.items():
            score = linear.weight.detach().abs() * norms[name].to(linear.weight.device)
            sizes[name] = linear.weight.numel()
            reached[name] = _prune(linear, _mask(step, score, True))
    record = _record(step, reached, sizes)
    return {"method": "wanda", **record, "calibration_texts": len(ids)}


def _check_sparsity(params: dict[str, int]) -> str | None:
    if not 0 < params["sparsity"] < 100:
        return f"sparsity {params['sparsity']}%: give a percentage from 1 to 99"
    return None


def _check_n_of_m(params: dict[str, int]) -> str | None:
    keep, group = params["keep"], params["group"]
    if not 0 < keep < group:
        return f"{keep}of{group}: keep between 1 and {group - 1} weights of every {group}"
    return None


_SPARSITY = r"-(?P<sparsity>\d+)"
_N_OF_M = r"-(?P<keep>\d+)of(?P<group>\d+)"

STEPS = (
    StepEntry.of(f"magnitude{_SPARSITY}", prune_magnitude, "pruning", example="magnitude-50",
                 check=_check_sparsity),
    StepEntry.of(f"magnitude{_N_OF_M}", prune_magnitude, "pruning", example="magnitude-2of4",
                 check=_check_n_of_m),
    StepEntry.of(f"wanda{_SPARSITY}", prune_wanda, "pruning", WANDA_OPTIONS, "wanda-50",
                 calibrated=True, check=_check_sparsity),
    StepEntry.of(f"wanda{_N_OF_M}", prune_wanda, "pruning", WANDA_OPTIONS, "wanda-2of4",
                 calibrated=True, check=_check_n_of_m),
)  # fmt: skip
