"""LoRA mode: peft adapters on every linear layer of the transformer blocks (not the head)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from peft import LoraConfig, get_peft_model

from harness_ext.errors import MuseQuantError
from model_wrappers.precisions import quantized_linear_names
from muse_quant.unlearning.config import UnlearnConfig


def with_lora(model: torch.nn.Module, config: UnlearnConfig) -> Any:
    """``model`` wrapped by peft with a fresh LoRA adapter on all block linears."""
    targets = quantized_linear_names(model)  # every linear but the head: what 4-bit quantizes
    if not targets:
        raise MuseQuantError(
            f"--mode lora: {type(model).__name__} has no linear layers besides the output head "
            "to put adapters on; use --mode full"
        )
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


@contextlib.contextmanager
def adapter_off(peft_model: Any) -> Iterator[torch.nn.Module]:
    """The frozen target inside a LoRA run: the same model with its adapter disabled."""
    with peft_model.disable_adapter():
        yield peft_model
