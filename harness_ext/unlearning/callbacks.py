"""Trainer callbacks of a run: the progress bar with both loss terms, and early stopping on a
forget criterion (forget verbatim ROUGE-L, measured by greedy decoding every few steps)."""

from __future__ import annotations

from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import TrainerCallback


class LossProgress(TrainerCallback):
    """One tqdm bar over the steps, showing the latest forget and retain terms."""

    def __init__(self, history: list[tuple[float, float]], total: int, desc: str) -> None:
        self.history = history
        self.bar = tqdm(total=total, desc=desc, unit="step", leave=False)

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        forget, retain = self.history[-1]
        self.bar.set_postfix(forget=f"{forget:.3f}", retain=f"{retain:.3f}", refresh=False)
        self.bar.update(1)

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.bar.close()


class ForgetCheck(TrainerCallback):
    """Every ``every`` steps, score forget verbatim memorization; stop once it is <= ``stop_at``.

    ``checks`` keeps ``(step, score)`` for ``unlearn.json``.
    """

    def __init__(self, tokenizer: Any, pairs: list[dict[str, str]], every: int, stop_at: float):
        self.tokenizer, self.pairs, self.every, self.stop_at = tokenizer, pairs, every, stop_at
        self.checks: list[tuple[int, float]] = []

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any):
        if state.global_step % self.every:
            return
        from harness_ext.toyworld.check import verbatim_rouge

        model.eval()
        with torch.no_grad():
            score = verbatim_rouge(model, self.tokenizer, self.pairs)
        model.train()
        self.checks.append((state.global_step, round(score, 4)))
        if score <= self.stop_at:
            control.should_training_stop = True
