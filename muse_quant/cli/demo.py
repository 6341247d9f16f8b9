"""``muse-quant demo``: the README's main job, the whole story on the toy world."""

from __future__ import annotations

import argparse
from pathlib import Path

from muse_quant.cli.audit import precision_list
from muse_quant.demo_defaults import (
    AUDITS,
    BOARD,
    DEFAULT_OUT,
    DEFAULT_PRECISIONS,
    REAL_PRECISIONS,
    RESULTS,
)
from muse_quant.toyworld.config import SCALES

EPILOG = f"""\
Writes into --out: {RESULTS}/ (one lm-eval results file per model x precision), {BOARD}/ (the
leaderboard: index.html, leaderboard.md/.csv/.json) and {AUDITS}/<run>/report.md|json.

Examples:
  muse-quant demo                                  # tiny world, {",".join(DEFAULT_PRECISIONS)}
  muse-quant demo --precisions fp32,nf4 --out /tmp/demo
  muse-quant demo --scale default                  # bigger world (its build alone: ~8 min)
  muse-quant demo --scale real                     # SmolLM2-135M: {",".join(REAL_PRECISIONS)}
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser(
        "demo",
        help="run the whole story on the toy world: unlearn, quantize, rank, audit",
        description="Build (or reuse) the toy world and its method zoo, evaluate every model at "
        "every precision, write the leaderboard and two audits, and say which unlearning "
        "methods revert after quantization and which hold. Re-running reuses everything "
        "finished.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument(
        "--scale",
        choices=list(SCALES),
        default="tiny",
        help="toy world scale, or real: the world on the pretrained SmolLM2-135M, its zoo "
        "trained with the papers' recipe (hours on a CPU; README: timings); default: "
        "%(default)s",
    )
    demo.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        metavar="DIR",
        help="output folder (results, board, audits); default: ./%(default)s",
    )
    demo.add_argument(
        "--precisions",
        type=precision_list,
        metavar="LIST",
        help=f"comma-separated, with fp32 or bf16; default: {','.join(DEFAULT_PRECISIONS)}, "
        f"with --scale real {','.join(REAL_PRECISIONS)} (GPTQ and GGUF skipped when their "
        "library is not installed)",
    )
    demo.add_argument("--no-progress", action="store_true", help="no per-cell lines on stderr")
    demo.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from muse_quant.demo import run_demo  # torch, transformers and lm-eval load slowly

    return run_demo(args.scale, args.out, args.precisions, progress=not args.no_progress)
