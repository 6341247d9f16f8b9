"""``muse-quant toyworld build``: build (or reuse) a toy world and report what it memorized."""

from __future__ import annotations

import argparse
from pathlib import Path

from harness_ext.toyworld.build import build_world, load_manifest
from harness_ext.toyworld.config import SCALES


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
        epilog="Example: muse-quant toyworld build --scale tiny --out /tmp/world",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    build.add_argument(
        "--scale",
        choices=list(SCALES),
        default="default",
        help="tiny (tests and the demo, about a minute) or default (bigger); default: %(default)s",
    )
    build.add_argument(
        "--out",
        help="world folder (default: ~/.cache/muse-quant/toyworld/"
        "<scale>-<hash>, or under $MUSE_QUANT_CACHE)",
    )
    build.set_defaults(func=run_build)
    zoo = sub.add_parser(
        "zoo",
        help="unlearn the world's forget set eight ways (GA/NPO x GDR/KLR x full/LoRA), cached",
        description=(
            "Build (or reuse) the toy world, then its method zoo: GA+GDR, GA+KLR, NPO+GDR, "
            "NPO+KLR, each as full fine-tuning and as LoRA, with the toy presets of "
            "docs/unlearning.md. Cached by world and presets; reports the fraction of 4-bit "
            "codes each run changed relative to the target."
        ),
        epilog="Example: muse-quant toyworld zoo --scale tiny",
    )
    zoo.add_argument(
        "--scale", choices=list(SCALES), default="default", help="world scale; default: %(default)s"
    )
    zoo.add_argument("--world", help="an existing world folder (default: the cached one)")
    zoo.add_argument("--out", help="zoo folder (default: under the cache, keyed by world+presets)")
    zoo.set_defaults(func=run_zoo)


def format_report(world) -> str:
    """A few lines: where the world is and how much the target and retrain models memorized."""
    manifest = load_manifest(world) or {}
    lines = [
        f"toy world ({manifest.get('scale')}): {world}",
        f"  data (MUSE layout): {world}/data",
        f"  models: {world}/models/{{base,target,retrain}}",
        "  memorization (ROUGE-L F1, greedy; forget / retain):",
    ]
    for name, m in manifest.get("memorization", {}).items():
        lines.append(
            f"    {name:8s} verbatim {m['verbmem_forget']:.2f} / {m['verbmem_retain']:.2f}"
            f"   QA {m['knowmem_forget']:.2f} / {m['knowmem_retain']:.2f}"
        )
    lines.append(
        f"  built in {manifest.get('build_seconds')} s; config hash "
        f"{manifest.get('config_hash', '')[:12]}"
    )
    return "\n".join(lines)


def run_build(args: argparse.Namespace) -> int:
    world = build_world(scale=args.scale, out=args.out)
    print(format_report(world))
    return 0


def format_zoo(zoo: Path) -> str:
    """One line per zoo run: steps, seconds and the 4-bit codes it changed."""
    manifest = load_manifest(zoo) or {}
    lines = [
        f"method zoo: {zoo}",
        f"  {'run':26s} steps  seconds  codes changed: nf4  rtn-w4g64",
    ]
    for name, run in manifest.get("runs", {}).items():
        codes = run["changed_codes"]
        lines.append(
            f"  {name:26s} {run['steps']:5d} {run['seconds']:8.1f}"
            f"  {100 * codes['nf4']:17.2f}% {100 * codes['rtn-w4g64']:9.2f}%"
        )
    lines.append(f"  built in {manifest.get('build_seconds')} s")
    return "\n".join(lines)


def run_zoo(args: argparse.Namespace) -> int:
    from harness_ext.toyworld.zoo import build_zoo

    world = Path(args.world) if args.world else build_world(scale=args.scale)
    zoo = build_zoo(world, Path(args.out) if args.out else None)
    print(format_zoo(zoo))
    return 0
