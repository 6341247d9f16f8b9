"""``muse-quant sweep PLAN.yaml``: run a plan's cells (resumable), or list them with --dry-run."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from harness_ext.errors import MuseQuantError

EXAMPLE = """\
Example plan (docs/sweep.md has the full format):

  results: results/
  corpora: {news: world/data}            # a MUSE-layout folder, or hub
  precisions: [fp32, nf4, fp4, gptq-w4g128]
  options: {batch_size: 64, emulated: true}
  models:
    - {label: target, role: target, pretrained: world/models/target}
    - {label: retrain, role: retrain, pretrained: world/models/retrain}
    - {label: npo_lora, role: method, method: NPO, pretrained: world/models/target,
       adapter: runs/npo_lora}

  muse-quant sweep plan.yaml --dry-run     # list the cells and which are finished
  muse-quant sweep plan.yaml               # run them; killed, run it again to resume
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "sweep",
        help="evaluate every model x precision x corpus of a plan (resumable)",
        description="Run every cell (model x corpus x precision) of a plan through the MUSE\n"
        "lm-eval tasks, writing RESULTS/<label>/<corpus>/<precision>/results.json.\n"
        "Finished cells are skipped, so a killed sweep resumes where it stopped.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("plan", type=Path, help="the plan (YAML)")
    p.add_argument("--results", type=Path, help="results folder (default: the plan's results:)")
    p.add_argument("--dry-run", action="store_true", help="list the cells, run nothing")
    p.add_argument(
        "--prune",
        action="store_true",
        help="move cells of the results folder that the plan no longer names into .pruned/",
    )
    p.add_argument(
        "--no-progress", action="store_true", help="no progress bar or per-cell lines on stderr"
    )
    p.add_argument(
        "--executor",
        help="local: one cell after another here (default); ray: one Ray task per cell",
    )
    p.add_argument(
        "--ray-address",
        metavar="ADDRESS",
        help="with --executor ray: auto or HOST:PORT of a running cluster (default: start a "
        "local Ray runtime)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # The sweep loads torch and lm-eval.
    from muse_quant.sweep import format_cells, load_plan, plan_jobs, run_sweep, summary_table
    from muse_quant.sweep.plan import with_executor

    plan = load_plan(args.plan)
    if args.executor or args.ray_address:
        plan = with_executor(plan, args.executor, args.ray_address)
    if args.threads is not None:  # the command's --threads over the plan's threads:
        plan = replace(plan, options=replace(plan.options, threads=args.threads))
    results = args.results or plan.results
    if results is None:
        raise MuseQuantError(f"plan {args.plan}: no results folder; add results: DIR or --results")
    if args.dry_run:
        print(format_cells(plan_jobs(plan, results.resolve())))
        return 0
    paths = run_sweep(plan, results, progress=not args.no_progress, prune=args.prune)
    print(summary_table(paths))
    return 0
