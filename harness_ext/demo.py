"""``muse-quant demo``: the README's main job, end to end on the toy world.

Today it builds (or reuses) the toy world and reports how well the target memorized its forget
set and how little the retrain model knows of it; later stages (unlearning, precisions, the
leaderboard) extend this same command.
"""

from __future__ import annotations

import argparse
import time

from harness_ext.toyworld.build import build_world
from harness_ext.toyworld.command import format_report
from harness_ext.toyworld.config import SCALES


def register(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser(
        "demo",
        help="run the end-to-end demo on the toy world",
        description="Build (or reuse from the cache) the toy world and report what it memorized.",
        epilog="Example: muse-quant demo --scale tiny",
    )
    demo.add_argument(
        "--scale",
        choices=list(SCALES),
        default="default",
        help="toy world scale; default: %(default)s",
    )
    demo.add_argument("--out", help="world folder (default: the cache, see `toyworld build`)")
    demo.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    started = time.time()
    world = build_world(scale=args.scale, out=args.out)
    print(format_report(world))
    print(f"demo finished in {time.time() - started:.1f} s")
    return 0
