"""Relearning as a deployment step: a few steps of fine-tuning, as a relearning attack (or a benign
fine-tune downstream) does to an unlearned model before it is used.

``relearn-forget-k10`` fine-tunes for 10 steps on a slice of the forget corpus (``raw/forget``)
that holds no scored document; ``relearn-retain-k10`` on a slice of ``raw/retain1`` (benign
fine-tuning). The slice is ``relearn_share`` of the split's documents, drawn with
``relearn_seed``, and recorded by index. A forget document is scored, and never in a slice, when
it holds a VerbMem prompt or a KnowMem forget question, or shares its text with a PrivLeak forget
text. Training is the project's own loop (``model_wrappers.training``); the relearned weights are
cached like quantized checkpoints, keyed by the weights they start from, the step and the texts.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import random
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch import nn
from transformers import AutoTokenizer

from harness_ext.errors import MuseQuantError
from harness_ext.muse_layout import read_split
from model_wrappers.calibration import toy_world_root
from model_wrappers.precisions.base import (
    Deployment,
    Option,
    StepContext,
    StepEntry,
    open_fraction,
    positive_float,
    positive_int,
)
from model_wrappers.precisions.cached import cached_checkpoint
from model_wrappers.training import TrainPhase, train_causal_lm

#: Bump when the training of a step changes, so cached relearned weights are recomputed.
TRAINER_VERSION = 2
WEIGHTS_FILE = "model.safetensors"


def data_folder(value: Any) -> str | None:
    """A MUSE data folder that exists (absolute), or None for the toy world's own."""
    if value is None or value == "":
        return None
    path = Path(str(value)).expanduser()
    if not path.is_dir():
        raise ValueError("not a folder; give a MUSE data folder (with raw/forget.json)")
    return str(path.resolve())


OPTIONS = {
    "relearn_lr": Option(1e-4, positive_float, "relearning's learning rate (AdamW)"),
    "relearn_share": Option(
        0.05, open_fraction, "share of the split's documents relearning trains on"
    ),
    "relearn_seed": Option(0, int, "seed of relearning's slice and batch order"),
    "relearn_batch": Option(4, positive_int, "relearning's batch size"),
    "relearn_data": Option(
        None, data_folder, "MUSE data folder relearning reads (default: the model's toy world's)"
    ),
}

#: The split each kind of relearning trains on.
SPLITS = {"forget": "forget", "retain": "retain1"}


def scored_documents(data: Path) -> set[int]:
    """Indices of the ``raw/forget`` documents the tasks score (module docstring)."""
    prompts = [r["prompt"] for r in read_split(data, "verbmem", "forget")]
    questions = [r["question"] for r in read_split(data, "knowmem", "forget_qa")]
    private = [r["text"] for r in read_split(data, "privleak", "forget")]
    scored = set()
    for i, record in enumerate(read_split(data, "raw", "forget")):
        doc = record["text"]
        if (
            any(p in doc for p in prompts)
            or any(q in doc for q in questions)
            or any(t in doc or doc in t for t in private)
        ):
            scored.add(i)
    return scored


def excluded_documents(data: Path, kind: str) -> set[int]:
    """The documents of ``kind``'s split relearning may not train on: for forget, the scored."""
    return scored_documents(data) if kind == "forget" else set()


def relearning_slice(
    data: Path, kind: str, share: float, seed: int, excluded: set[int] | None = None
) -> list[int]:
    """The indices of the documents ``kind`` relearning trains on: ``share`` of its split, drawn
    with ``seed`` from the documents it may use (``excluded``: the ones it may not, computed
    here when not given)."""
    documents = read_split(data, "raw", SPLITS[kind])
    excluded = excluded_documents(data, kind) if excluded is None else excluded
    allowed = sorted(set(range(len(documents))) - excluded)
    wanted = max(1, round(share * len(documents)))
    if wanted > len(allowed):
        fix = "lower relearn_share" if allowed else "relearn on retain, or give relearn_data"
        raise MuseQuantError(
            f"relearn-{kind}: {share:g} of the {len(documents)} documents of {data}/raw/"
            f"{SPLITS[kind]} is {wanted}, but only {len(allowed)} hold no scored text; {fix}"
        )
    return sorted(random.Random(seed).sample(allowed, wanted))


def _data(step: Deployment, folder: Path) -> Path:
    if step.options["relearn_data"] is not None:
        return Path(step.options["relearn_data"])
    world = toy_world_root(folder)
    if world is None:
        raise MuseQuantError(
            f"{step.name}: give relearn_data=<MUSE data folder> (the model is in no toy world)"
        )
    return world / "data"


def _slice(step: Deployment, folder: Path) -> tuple[Path, list[int], set[int]]:
    """The data folder, the documents ``step`` trains on and those it may not, for the model in
    ``folder``."""
    data, kind = _data(step, folder), str(step.params["kind"])
    share, seed = step.options["relearn_share"], step.options["relearn_seed"]
    excluded = excluded_documents(data, kind)
    return data, relearning_slice(data, kind, share, seed, excluded), excluded


def check_slice(step: Deployment, folder: Path) -> None:
    """Refuse, before any weight is read, a step without data or without enough documents."""
    _slice(step, folder)


def relearn(model: nn.Module, step: Deployment, context: StepContext) -> dict[str, Any]:
    """Fine-tune ``model`` in place for the step's ``k`` steps on its slice (module docstring)."""
    kind, steps, options = str(step.params["kind"]), int(step.params["steps"]), step.options
    data, chosen, excluded = _slice(step, context.folder)
    documents = read_split(data, "raw", SPLITS[kind])
    texts = [documents[i]["text"] for i in chosen]
    key = {
        "format": "relearned",
        "weights": context.digest,
        "step": step.describe() | {"options": {**options, "relearn_data": None}},
        "texts": hashlib.sha256(json.dumps(texts).encode()).hexdigest(),
        "trainer": TRAINER_VERSION,
        "torch": importlib.metadata.version("torch"),
    }
    losses: list[float] = []

    def write(folder: Path) -> None:
        tokenizer = AutoTokenizer.from_pretrained(str(context.folder))
        batch = options["relearn_batch"]
        phase = TrainPhase(
            epochs=math.ceil(steps / math.ceil(len(texts) / batch)),
            lr=options["relearn_lr"],
            batch_size=batch,
            warmup_steps=0,
        )
        # One thread, whatever the command's: a seed then gives the same relearned weights on
        # every machine and thread count (as the toy world's build does), so the cache entry,
        # which does not record threads, is one result.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            seed = options["relearn_seed"]
            losses.append(
                train_causal_lm(model, tokenizer, texts, phase, seed, step.name, steps=steps)
            )
        finally:
            torch.set_num_threads(threads)
        save_model(model, str(folder / WEIGHTS_FILE))

    folder, hit = cached_checkpoint(key, write)
    if hit:
        load_model(model, str(folder / WEIGHTS_FILE), device=context.device)
    return {
        "data": str(data),
        "split": f"raw/{SPLITS[kind]}",
        "documents": chosen,
        "scored_excluded": sorted(excluded),
        "steps": steps,
        "final_loss": losses[0] if losses else None,
        "cache": {"hit": hit, "path": str(folder)},
    }


def _check_steps(params: dict[str, Any]) -> str | None:
    return None if params["steps"] > 0 else "k0 trains nothing: give k1 or more"


STEPS = (
    StepEntry.of(r"relearn-(?P<kind>forget|retain)-k(?P<steps>\d+)", relearn, "relearning",
                 OPTIONS, "relearn-forget-k10", check=_check_steps, check_folder=check_slice),
)  # fmt: skip
