"""``muse-quant unlearn``: one unlearning run from the command line."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields

from muse_quant.unlearning.config import (
    MODES,
    PARAM_DTYPES,
    QUANT_AWARE,
    RETAIN_LOSSES,
    UnlearnConfig,
)

#: Hyperparameter flags: --flag-name maps to UnlearnConfig.flag_name (help text, type).
HYPERPARAMETERS = {
    "lr": (float, "learning rate, constant schedule (default: full 1e-5, LoRA 1e-4)"),
    "max_steps": (int, "optimizer steps (default: %(default)s)"),
    "batch_size": (int, "forget/retain pairs per step (default: %(default)s)"),
    "retain_weight": (float, "weight of the GDR/KLR term (default: %(default)s)"),
    "beta": (float, "NPO's inverse temperature (default: %(default)s)"),
    "param_dtype": (
        str,
        "bf16: AdamW updates bfloat16 weights, as MUSE's baselines; fp32: "
        "float32 master weights (default: %(default)s)",
    ),
    "max_length": (int, "tokens per training chunk (default: %(default)s)"),
    "lora_r": (int, "LoRA rank (default: %(default)s)"),
    "lora_alpha": (int, "LoRA alpha (default: %(default)s)"),
    "lora_dropout": (float, "LoRA dropout (default: %(default)s)"),
    "seed": (int, "seed of data order, pairing and LoRA init (default: %(default)s)"),
    "check_every": (int, "early stopping: score forget VerbMem every N steps (0: off)"),
    "stop_verbmem": (float, "early stopping: stop once forget VerbMem (ROUGE-L, 0..1) <= this"),
    "stop_knowmem": (float, "early stopping: and forget KnowMem (ROUGE-L, 0..1) <= this"),
    "salient_fraction": (
        float,
        "SURE (full mode): train only this fraction of the block linears, those whose weights "
        "the forget loss's gradient is largest on (default: train everything)",
    ),
    "quant_aware": (
        str,
        "quantization-aware (full mode): compute every step through the weights rounded to "
        "this 4-bit scheme, gradients straight through (default: off)",
    ),
}


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
    p.add_argument("--out", required=True, help="output folder (must be new or empty)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    for name, (kind, text) in HYPERPARAMETERS.items():
        extra = {"choices": CHOICES[name]} if name in CHOICES else {}
        p.add_argument(
            f"--{name.replace('_', '-')}", type=kind, default=defaults[name], help=text, **extra
        )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from muse_quant.unlearning.recipe import RECORD, unlearn  # torch and transformers

    config = UnlearnConfig(
        method=args.method,
        retain_loss=args.retain_loss,
        mode=args.mode,
        **{name: getattr(args, name) for name in HYPERPARAMETERS},
    )
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
