"""Trainer callbacks of a run: the progress bar with both loss terms, and early stopping on a
forget criterion (forget verbatim ROUGE-L, measured by greedy decoding every few steps)."""

from __future__ import annotations

from typing import Any

import torch
from torch.nn.utils import parametrize
from transformers import TrainerCallback

from model_wrappers.progress import step_progress
from muse_quant.greedy_check import qa_rouge, verbatim_rouge


class LossProgress(TrainerCallback):
    """Progress over the steps (a bar on a terminal, a few plain lines elsewhere), showing the
    latest forget and retain terms."""

    def __init__(self, history: list[tuple[float, float]], total: int, desc: str) -> None:
        self.history = history
        self.bar = step_progress(total, desc)

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        forget, retain = self.history[-1]
        self.bar.set_postfix(forget=f"{forget:.3f}", retain=f"{retain:.3f}", refresh=False)
        self.bar.update(1)

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.bar.close()


class ForgetCheck(TrainerCallback):
    """Every ``every`` steps, score forget memorization with greedy decoding (ROUGE-L F1, 0..1):
    verbatim continuations of ``pairs`` and, when ``stop_knowmem`` is set, answers to ``qa``
    (with ``icl`` in context), scored only once VerbMem is low enough, since it costs more. Stop
    once every checked score is at or below its threshold.

    ``checks`` keeps one dict per check for ``unlearn.json``; ``stopped`` says whether it fired.
    """

    def __init__(
        self,
        tokenizer: Any,
        pairs: list[dict[str, str]],
        qa: tuple[list[dict[str, str]], list[dict[str, str]]] | None,
        every: int,
        stop_verbmem: float,
        stop_knowmem: float | None,
    ) -> None:
        self.tokenizer, self.pairs, self.qa, self.every = tokenizer, pairs, qa, every
        self.stop_verbmem, self.stop_knowmem = stop_verbmem, stop_knowmem
        self.checks: list[dict[str, float]] = []
        self.stopped = False

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any):
        if state.global_step % self.every:
            return

        model.eval()
        # cached(): a parametrized weight (a quantization-aware run's NF4 rounding) is computed
        # once for the whole check, not at every decoding step
        with torch.no_grad(), parametrize.cached():
            check = {"step": state.global_step}
            check["verbmem"] = round(verbatim_rouge(model, self.tokenizer, self.pairs), 4)
            done = check["verbmem"] <= self.stop_verbmem
            if done and self.stop_knowmem is not None and self.qa is not None:
                check["knowmem"] = round(qa_rouge(model, self.tokenizer, *self.qa), 4)
                done = done and check["knowmem"] <= self.stop_knowmem
        model.train()
        self.checks.append(check)
        if done:
            self.stopped = control.should_training_stop = True
