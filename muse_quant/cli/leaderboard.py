"""``muse-quant leaderboard RESULTS_DIR --out DIR``: results files in, a published board out."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness_ext.errors import MuseQuantError
from leaderboards.render.console import format_summary
from leaderboards.robustness import RobustnessOptions, build_board
from leaderboards.write import check_board_folder, write_folder

EXAMPLE = """\
Example (a sweep's results, the sweep marked target and retrain itself):
  muse-quant leaderboard results/ --out board/

Example (lm-eval's own results files; labels are the pretrained paths):
  muse-quant leaderboard runs/ --out board/ \\
      --target models/target --retrain models/retrain --attack mink_40

Writes board/leaderboard.md, .csv, .json, index.html and model-index/*.yaml (docs/leaderboard.md).
"""


def folder_path(text: str) -> Path:
    """A folder argument; an empty one (an unset shell variable) is refused, not taken as the
    current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path; give a folder")
    return Path(text)


def precision_list(text: str) -> tuple[str, ...]:
    """``--precisions fp32, nf4`` -> ``("fp32", "nf4")``; an empty item (``fp32,,nf4``, a
    trailing comma) is an error, not skipped: it is usually a name lost in editing."""
    names = tuple(name.strip() for name in text.split(","))
    if not all(names):
        raise argparse.ArgumentTypeError(
            f"{text!r} has an empty item; give comma-separated precision names, e.g. fp32,nf4"
        )
    return names


def register(subparsers: argparse._SubParsersAction) -> None:
    defaults = RobustnessOptions()
    parser = subparsers.add_parser(
        "leaderboard",
        help="rank unlearning methods by how well forgetting survives quantization",
        description=(
            "Read lm-eval results files (MUSE tasks) under RESULTS_DIR, compute per method and "
            "precision the MUSE metrics, PrivLeak, retention, revert, utility retention and the "
            "criteria C1-C4, rank methods (docs/leaderboard.md), and write the board to --out."
        ),
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("results_dir", type=folder_path, metavar="RESULTS_DIR")
    parser.add_argument(
        "--out",
        type=folder_path,
        required=True,
        metavar="DIR",
        help="board folder: new, empty, or a previous board holding nothing else (it is "
        "replaced whole); not the results folder, nor one holding it",
    )
    parser.add_argument("--target", metavar="LABEL", help="label of the model before unlearning")
    parser.add_argument("--retrain", metavar="LABEL", help="label of the model retrained on retain")
    parser.add_argument(
        "--attack",
        default=defaults.attack,
        help="membership-inference attack of PrivLeak (auc_<attack> in the files); "
        "default: %(default)s",
    )
    parser.add_argument(
        "--privleak-tolerance",
        type=float,
        default=defaults.privleak_tolerance,
        help="C3 passes when |PrivLeak| <= this (>= 0); default: %(default)s",
    )
    parser.add_argument(
        "--utility-fraction",
        type=float,
        default=defaults.utility_fraction,
        help="C4 passes when KnowMem_r >= this x the target's at full precision, in (0, 1]; "
        "default: %(default)s",
    )
    parser.add_argument(
        "--revert-tolerance",
        type=float,
        default=defaults.revert_tolerance,
        help="a forget retention may rise this much (absolute, >= 0) over full precision and "
        "still hold; default: %(default)s",
    )
    parser.add_argument(
        "--certify",
        type=precision_list,
        metavar="D",
        help="the deployments of the durability certificate, comma-separated precision names "
        "as the results files carry them (e.g. int8,nf4,gguf-q4_k_m); epsilon is "
        "--revert-tolerance; default: every precision a method was evaluated at but full "
        "precision",
    )
    parser.add_argument(
        "--retrain-auc",
        type=float,
        metavar="AUC",
        help="AUC_retrain for PrivLeak when no retrain model is in the results, in (0, 1] "
        "(default: MUSE's published value for news/books at Min-40%%)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from leaderboards.render.board_files import MODEL_INDEX_DIR, render_all  # matplotlib

    options = RobustnessOptions(
        attack=args.attack,
        privleak_tolerance=args.privleak_tolerance,
        utility_fraction=args.utility_fraction,
        retrain_auc=args.retrain_auc,
        revert_tolerance=args.revert_tolerance,
        certify=args.certify,
    )
    for flag, label in (("--target", args.target), ("--retrain", args.retrain)):
        if label is not None and not label.strip():
            raise MuseQuantError(f"{flag} is empty; give the label of a model in the results")
    check_board_folder(args.out, args.results_dir)
    board = build_board(
        args.results_dir, options, target=args.target, retrain=args.retrain, exclude=args.out
    )
    files = render_all(board)
    write_folder(args.out, files, args.results_dir)
    for warning in board.warnings:
        print(f"muse-quant: warning: {warning}", file=sys.stderr)
    models = sum(name.startswith(f"{MODEL_INDEX_DIR}/") for name in files)
    print(
        f"leaderboard written to {args.out}: leaderboard.md, leaderboard.csv, leaderboard.json, "
        f"index.html, {MODEL_INDEX_DIR}/ ({models} models)"
    )
    print(format_summary(board))
    return 0
