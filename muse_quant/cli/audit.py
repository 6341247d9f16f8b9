"""``muse-quant audit``: one model's verdict per precision, with evidence (docs/audit.md)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from harness_ext.errors import MuseQuantError
from harness_ext.muse_data import CORPORA
from leaderboards.audit import REPORT_FILES, AuditOptions
from muse_quant.cli.leaderboard import folder_path, precision_list

EXAMPLE = """\
Example (the toy world, a model unlearned with GA+GDR; docs/audit.md walks through it):
  W=$(muse-quant toyworld build --scale tiny | sed -n 's/^toy world (tiny): //p')
  muse-quant unlearn --model $W/models/target --data $W/data --method ga --retain-loss gdr \\
      --mode full --out runs/ga_gdr
  muse-quant audit --model runs/ga_gdr --target $W/models/target --retrain $W/models/retrain \\
      --data $W/data --precisions fp32,nf4,fp4,rtn-w4g128 --emulated --out audit/

An adapter:  --model BASE --adapter RUN/adapter [--no-merge]
Exit status: 0 forgetting holds at every precision, 1 it does not, 2 bad input.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "audit",
        help="does one model's unlearning survive quantization? a verdict per precision",
        description="Evaluate an unlearned model (full or adapter), its target and its retrain "
        "model at each precision on one corpus (cells already in the results folder are "
        "reused), and write report.md and report.json to --out: a verdict per precision, the "
        "evidence and the provenance. The exit status is the verdict.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="the audited checkpoint, or an adapter's base")
    p.add_argument("--adapter", help="the audited LoRA adapter (peft folder) on --model")
    p.add_argument(
        "--no-merge",
        dest="merge",
        action="store_false",
        help="keep the adapter unmerged on the quantized base (default: merge, then quantize); "
        "only with --adapter",
    )
    p.add_argument("--target", required=True, help="the model before unlearning")
    p.add_argument("--retrain", required=True, help="the model trained without the forget set")
    p.add_argument("--data", required=True, help="MUSE-layout data folder, or hub")
    p.add_argument("--corpus", choices=list(CORPORA), default="news", help="default: %(default)s")
    p.add_argument(
        "--precisions",
        required=True,
        type=precision_list,
        help="comma-separated, with a full precision, e.g. fp32,nf4,gptq-w4g128",
    )
    p.add_argument("--out", type=folder_path, required=True, help="report folder")
    p.add_argument("--results", type=folder_path, help="results folder (default: OUT/results)")
    p.add_argument("--label", help="the audited model's label (default: its folder's name)")
    p.add_argument("--method", help="the unlearning method the report names (default: the label)")
    p.add_argument(
        "--revert-tolerance",
        type=float,
        default=AuditOptions.revert_tolerance,
        help="a forget retention may rise this much (absolute, >= 0) over full precision and "
        "still hold; default: %(default)s",
    )
    p.add_argument(
        "--certify",
        type=precision_list,
        metavar="D",
        help="the deployments of the durability certificate, comma-separated, from --precisions "
        "(default: every one but the full precision); epsilon is the revert tolerance",
    )
    p.add_argument(
        "--emulated", action="store_true", help="run 4-bit precisions emulated (dense, dequantized)"
    )
    p.add_argument("--batch-size", type=int, help="documents per batch, >= 1 (default: 64)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument(
        "--calibration",
        help="GPTQ/AWQ calibration texts (docs/precisions.md); only with such a precision",
    )
    p.add_argument("--no-progress", action="store_true", help="no per-cell lines on stderr")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from muse_quant.audit import AuditRequest, run_audit, takes_calibration  # torch, lm-eval

    if args.calibration and not any(map(takes_calibration, args.precisions)):
        raise MuseQuantError(
            "--calibration is for calibrated precisions (gptq-w4g128, awq-w4g128, ...), and "
            "--precisions lists none; leave it out"
        )

    # Every flag's destination is the request field of the same name; a flag left out (None)
    # keeps the field's default.
    given = {f.name: getattr(args, f.name) for f in fields(AuditRequest)}
    request = AuditRequest(**{k: v for k, v in given.items() if v is not None})
    audit = run_audit(request, progress=not args.no_progress)
    for warning in audit.board.warnings:
        print(f"muse-quant: warning: {warning}", file=sys.stderr)
    print(f"audit of {audit.label} on {audit.corpus.corpus} (results in {request.results_dir}):")
    print("\n".join(f"  {verdict.text}" for verdict in audit.verdicts))
    print(audit.headline)
    if audit.certificate is not None:
        print(audit.certificate.text)
    print(f"report written to {request.out}: {', '.join(REPORT_FILES)}")
    return audit.exit_status
