"""The target and retrain models, fine-tuned from the world's base.

A toy world trains them one after the other in this process, for the configured epochs. A world
on a pretrained base trains the retrain model in a second single-threaded process beside the
target (a step of a 135M-parameter model is seconds of one core's work, so two cores halve the
build), and the target's stop rule decides for both: after each epoch the target's forget VerbMem
and KnowMem are checked against the configuration's goal, and the retrain process waits for that
word before its next epoch, so the two train the same number of epochs on one schedule.
"""

from __future__ import annotations

import copy
import multiprocessing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness_ext.errors import MuseQuantError
from harness_ext.muse_layout import read_split
from model_wrappers.progress import library_bars_on_terminal_only
from model_wrappers.training import TrainPhase, train_causal_lm
from muse_quant.greedy_check import qa_rouge, verbatim_rouge
from muse_quant.toyworld.config import MemorizationGoal, ToyWorldConfig
from muse_quant.toyworld.pretrained import ResolvedBase
from muse_quant.toyworld.report import log


@dataclass(frozen=True)
class FineTuned:
    """What fine-tuning gave: the models (``retrain`` already saved where it trained in its own
    process), each one's last-epoch loss, and the epochs trained."""

    models: dict[str, Any]
    losses: dict[str, float]
    epochs: int


def fine_tune(
    config: ToyWorldConfig,
    base_model: Any,
    tokenizer: Any,
    texts: dict[str, list[str]],
    data: Path,
    base: ResolvedBase | None,
    models_dir: Path,
) -> FineTuned:
    """Target (on ``texts["target"]``) and retrain (on ``texts["retrain"]``) from ``base_model``
    (module docstring); the retrain model of a pretrained base is saved in ``models_dir``."""
    seed = config.seed + 1
    if base is None:
        models, losses = {}, {}
        for name in ("target", "retrain"):
            models[name] = copy.deepcopy(base_model)
            losses[name] = train_causal_lm(
                models[name], tokenizer, texts[name], config.finetune, seed, f"fine-tune {name}"
            )
        return FineTuned(models, losses, config.finetune.epochs)
    spawn = multiprocessing.get_context("spawn")  # no torch state forked into the process
    decisions, result = spawn.Queue(), spawn.Queue()
    retrain = spawn.Process(
        target=_retrain_alongside,
        args=(base, texts["retrain"], config.finetune, seed, models_dir / "retrain"),
        kwargs={"decisions": decisions, "result": result},
        name="muse-quant retrain",
    )
    retrain.start()
    log("the retrain model fine-tunes in a second process, epoch for epoch with the target")
    target, stopped = copy.deepcopy(base_model), []
    try:
        stop_rule = _memorized(config.goal, target, tokenizer, data, stopped, decisions.put)
        loss = train_causal_lm(
            target, tokenizer, texts["target"], config.finetune, seed, "fine-tune target",
            until=stop_rule,
        )  # fmt: skip
    except BaseException:
        retrain.terminate()
        raise
    finally:
        retrain.join()
    if retrain.exitcode != 0:
        raise MuseQuantError(
            f"the retrain model's process failed (exit code {retrain.exitcode}; its error is "
            "above); nothing of this world was kept"
        )
    retrain_loss = result.get(timeout=60)
    with library_bars_on_terminal_only():
        retrained = type(target).from_pretrained(models_dir / "retrain", dtype=torch.float32)
    return FineTuned(
        {"target": target, "retrain": retrained.eval()},
        {"target": loss, "retrain": retrain_loss},
        stopped[0] if stopped else config.finetune.epochs,
    )


def _retrain_alongside(
    base: ResolvedBase,
    texts: list[str],
    phase: TrainPhase,
    seed: int,
    out: Path,
    *,
    decisions: Any,
    result: Any,
) -> None:
    """The retrain process: the base fine-tuned on one thread, asking the target's stop rule
    (through ``decisions``) after each epoch, then saved to ``out``; its loss into ``result``."""
    torch.set_num_threads(1)
    model, tokenizer = base.load()
    loss = train_causal_lm(
        model, tokenizer, texts, phase, seed, "fine-tune retrain",
        until=lambda _: decisions.get(), shown=False,
    )  # fmt: skip
    with library_bars_on_terminal_only():
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    result.put(loss)


def _memorized(
    goal: MemorizationGoal | None, model: Any, tokenizer: Any, data: Path, stopped: list, tell: Any
):
    """The target's stop rule: after each epoch, its forget VerbMem and KnowMem against ``goal``
    (None: never stop early); the epoch it stops at goes into ``stopped``; ``tell(stop)`` passes
    the word on."""

    def until(done: int) -> bool:
        met = False
        if goal is not None:
            verbmem = verbatim_rouge(model, tokenizer, read_split(data, "verbmem", "forget"))
            knowmem = qa_rouge(
                model,
                tokenizer,
                read_split(data, "knowmem", "forget_qa"),
                read_split(data, "knowmem", "forget_qa_icl"),
            )
            met = verbmem >= goal.verbmem_forget and knowmem >= goal.knowmem_forget
            log(
                f"target after epoch {done}: forget VerbMem {verbmem:.2f}, KnowMem {knowmem:.2f}"
                f" (goal {goal.verbmem_forget:.2f} and {goal.knowmem_forget:.2f})"
                + ("; memorized" if met else "")
            )
        if met:
            stopped.append(done)
        tell(met)
        return met

    return until
