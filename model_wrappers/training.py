"""Full-parameter causal-LM training: plain AdamW, seeded, with its progress (a bar on a
terminal, a few lines elsewhere).

The one training loop of the project: the toy world's base, target and retrain models, and the
relearning deployment (``precisions/relearning.py``), which fine-tunes a checkpoint for a few steps
as a relearning attack does. Small enough that a hand-written loop is clearer than a Trainer: the
data are short texts, padded per batch; the loop is deterministic on CPU for a given seed and
thread count.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from model_wrappers.batching import pad_batch
from model_wrappers.progress import step_progress


@dataclass(frozen=True)
class TrainPhase:
    """One training phase (pretraining or a fine-tune): full-parameter AdamW."""

    epochs: int
    lr: float
    batch_size: int = 16
    warmup_steps: int = 20
    weight_decay: float = 0.0


def _batches(ids: list[list[int]], batch_size: int, pad_id: int, gen: torch.Generator):
    order = torch.randperm(len(ids), generator=gen).tolist()
    for start in range(0, len(order), batch_size):
        batch = pad_batch([ids[i] for i in order[start : start + batch_size]], pad_id)
        yield batch["input_ids"], batch["attention_mask"], batch["labels"]


def train_causal_lm(
    model: Any,
    tokenizer: Any,
    texts: list[str],
    phase: TrainPhase,
    seed: int,
    desc: str,
    steps: int | None = None,
    until: Callable[[int], bool] | None = None,
    shown: bool = True,
) -> float:
    """Train on ``texts`` (BOS + text + EOS each) for ``phase.epochs`` epochs, or only the first
    ``steps`` optimizer steps of them, or until ``until(epochs_done)``, asked after each epoch,
    says stop (the schedule still spans ``phase.epochs``); return the mean loss of the last epoch
    trained. ``shown``: whether its progress is displayed."""
    ids = [tokenizer(t)["input_ids"] + [tokenizer.eos_token_id] for t in texts]
    too_long = max(len(x) for x in ids)
    if too_long > model.config.max_position_embeddings:
        raise ValueError(f"a training text has {too_long} tokens, over the model's context")
    steps_per_epoch = math.ceil(len(ids) / phase.batch_size)
    total = steps_per_epoch * phase.epochs
    if steps is not None:
        total = min(total, steps)
    optim = torch.optim.AdamW(model.parameters(), lr=phase.lr, weight_decay=phase.weight_decay)

    def lr_factor(step: int) -> float:  # linear warm-up, then cosine decay to 10%
        if step < phase.warmup_steps:
            return (step + 1) / phase.warmup_steps
        progress = (step - phase.warmup_steps) / max(1, total - phase.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(optim, lr_factor)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    epoch_loss, done = float("nan"), 0
    with step_progress(total, desc, shown=shown) as bar:
        for epoch in range(phase.epochs):
            losses = []
            for input_ids, mask, labels in _batches(
                ids, phase.batch_size, tokenizer.pad_token_id, gen
            ):
                if done == total:
                    break
                loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optim.step()
                sched.step()
                optim.zero_grad(set_to_none=True)
                losses.append(loss.item())
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.3f}")
                done += 1
            if losses:
                epoch_loss = sum(losses) / len(losses)
            if until is not None and done < total:
                model.eval()
                stop = until(epoch + 1)
                model.train()
                if stop:
                    break
    model.eval()
    return epoch_loss
