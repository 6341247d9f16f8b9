"""``muse-quant unlearn``: one unlearning run from the command line."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields

from harness_ext.errors import MuseQuantError
from muse_quant.unlearning.config import (
    MODES,
    PARAM_DTYPES,
    QUANT_AWARE,
    RETAIN_LOSSES,
    UnlearnConfig,
)

#: Hyperparameter flags: --flag-name maps to UnlearnConfig.flag_name (help text, type); each
#: help ends with the range the value must be in (UnlearnConfig checks it) and the default.
HYPERPARAMETERS = {
    "lr": (float, "learning rate, constant schedule, > 0 (default: full 1e-5, LoRA 1e-4)"),
    "max_steps": (int, "optimizer steps, >= 1"),
    "batch_size": (int, "forget/retain pairs per step, >= 1"),
    "retain_weight": (float, "weight of the GDR/KLR term, >= 0 (not with --retain-loss none)"),
    "beta": (float, "NPO's inverse temperature, > 0 (--method npo only)"),
    "param_dtype": (
        str,
        "bf16: AdamW updates bfloat16 weights, as MUSE's baselines; fp32: "
        "float32 master weights",
    ),
    "max_length": (int, "tokens per training chunk, >= 2"),
    "lora_r": (int, "LoRA rank, >= 1 (--mode lora only)"),
    "lora_alpha": (int, "LoRA alpha, > 0 (--mode lora only)"),
    "lora_dropout": (float, "LoRA dropout, in [0, 1) (--mode lora only)"),
    "seed": (int, "seed of data order, pairing and LoRA init, in [0, 2**32 - 1]"),
    "check_every": (
        int,
        "early stopping: score forget VerbMem every N steps (0: off); needs the data's "
        "verbmem/forget.json",
    ),
    "stop_verbmem": (
        float,
        "early stopping: stop once forget VerbMem (ROUGE-L, 0..1) <= this; needs --check-every",
    ),
    "stop_knowmem": (
        float,
        "early stopping: and forget KnowMem (ROUGE-L, 0..1) <= this; needs --check-every and "
        "the data's knowmem/forget_qa*.json",
    ),
    "salient_fraction": (
        float,
        "SURE (full mode): train only this fraction of the block linears, in (0, 1], those "
        "whose weights the forget loss's gradient is largest on (default: train everything)",
    ),
    "quant_aware": (
        str,
        "quantization-aware (full mode): compute every step through the weights rounded to "
        "this 4-bit scheme, gradients straight through (default: off)",
    ),
}

#: Flags that mean something only with another flag's value: flag -> (field, the values of it
#: the flag needs, what to say). Given otherwise, they are refused rather than ignored.
ONLY_WITH = {
    "beta": ("method", ("npo",), "--method npo (NPO's inverse temperature)"),
    "retain_weight": ("retain_loss", ("gdr", "klr"), "--retain-loss gdr or klr"),
    "lora_r": ("mode", ("lora",), "--mode lora"),
    "lora_alpha": ("mode", ("lora",), "--mode lora"),
    "lora_dropout": ("mode", ("lora",), "--mode lora"),
}
#: Early-stopping thresholds: they need --check-every N > 0.
THRESHOLDS = ("stop_verbmem", "stop_knowmem")


#: Hyperparameters whose values are names from a list.
CHOICES = {"param_dtype": PARAM_DTYPES, "quant_aware": QUANT_AWARE}


def register(subparsers: argparse._SubParsersAction) -> None:
    defaults = {f.name: f.default for f in fields(UnlearnConfig)}
    p = subparsers.add_parser(
        "unlearn",
        help="unlearn a MUSE forget set from a model (GA/NPO, GDR/KLR, full or LoRA)",
        description="Unlearn the forget set of a MUSE-layout data folder from TARGET with "
        "transformers' Trainer. Writes a checkpoint (full) or a peft adapter (LoRA) and "
        "unlearn.json (hyperparameters, seeds, hashes, changed 4-bit codes). "
        "docs/unlearning.md has the recipes, presets and defaults.",
        epilog="Example: muse-quant unlearn --model world/models/target --data world/data "
        "--method npo --retain-loss gdr --mode lora --out runs/npo_gdr_lora",
    )
    p.add_argument("--model", required=True, help="target model folder or hub id")
    p.add_argument("--data", required=True, help="MUSE-layout folder (raw/forget, raw/retain1)")
    p.add_argument(
        "--method", required=True, help="a registered method, e.g. npo (docs/unlearning.md)"
    )
    p.add_argument("--retain-loss", choices=RETAIN_LOSSES, default=defaults["retain_loss"])
    p.add_argument("--mode", choices=MODES, default=defaults["mode"])
    p.add_argument(
        "--out",
        required=True,
        help="output folder: new or empty (not inside --model or --data, nor holding them)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a previous run in --out (a folder with its unlearn.json and only the "
        "files that run wrote; anything else is refused, never deleted)",
    )
    for name, (kind, text) in HYPERPARAMETERS.items():
        extra = {"choices": CHOICES[name]} if name in CHOICES else {}
        if defaults[name] is not None and name != "lr":
            text = f"{text} (default: {defaults[name]})"
        # None: not given (UnlearnConfig's default), so that a flag given where it means
        # nothing is refused rather than ignored
        p.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None, help=text, **extra)
    p.set_defaults(func=run)


def _given(args: argparse.Namespace) -> dict[str, object]:
    """The hyperparameters given on the command line, refused where they would mean nothing."""
    given = {name: getattr(args, name) for name in HYPERPARAMETERS}
    given = {name: value for name, value in given.items() if value is not None}
    for name, (field, values, needs) in ONLY_WITH.items():
        if name in given and getattr(args, field) not in values:
            raise MuseQuantError(
                f"--{name.replace('_', '-')} is for {needs}; this run "
                f"(--{field.replace('_', '-')} {getattr(args, field)}) does not use it: leave it "
                "out"
            )
    for name in THRESHOLDS:
        if name in given and not given.get("check_every"):
            raise MuseQuantError(
                f"--{name.replace('_', '-')} needs --check-every N (score the forget set every N "
                "steps); without it nothing is checked and the run never stops early"
            )
    return given


def run(args: argparse.Namespace) -> int:
    for flag in ("model", "data", "out"):
        if not getattr(args, flag).strip():
            raise MuseQuantError(f"--{flag} is empty; give a folder")
    config = UnlearnConfig(
        method=args.method, retain_loss=args.retain_loss, mode=args.mode, **_given(args)
    )
    from muse_quant.unlearning.recipe import RECORD, unlearn  # torch and transformers

    out = unlearn(args.model, args.data, config, args.out, overwrite=args.overwrite)
    record = json.loads((out / RECORD).read_text())
    codes = ", ".join(
        f"{k} {100 * v['overall']:.2f}%" for k, v in record["changed_codes"].items() if k != "any"
    )
    print(
        f"{config.name} ({config.mode}) -> {out}: {record['steps']} steps in "
        f"{record['seconds']} s; quantization codes changed vs target: {codes}"
    )
    return 0
