"""``muse-quant audit``: does a third party's unlearning survive quantization? (docs/audit.md)

One unlearned model (a checkpoint, or a LoRA adapter on its base), its target and retrain
references, one corpus and a set of precisions: the cells the verdict needs run through the sweep
(finished ones in the results folder are reused), then :mod:`leaderboards.audit` reads the results
files back and writes ``report.md`` and ``report.json``. The exit status is the verdict, for CI:
0 forgetting holds at every precision, 1 it does not, 2 bad input (one line; nothing written).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, fields
from pathlib import Path

from harness_ext.errors import MuseQuantError
from harness_ext.muse_data import CORPORA
from leaderboards.audit import REPORT_FILES, Audit, AuditOptions
from leaderboards.precision_names import FULL_PRECISIONS

#: The labels the references' results files carry (the audited model's is ``--label``).
TARGET_LABEL, RETRAIN_LABEL = "target", "retrain"

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


@dataclass(frozen=True)
class AuditRequest:
    """What to audit and how: the command's flags, for Python callers (the demo)."""

    model: str
    target: str
    retrain: str
    #: A MUSE-layout folder, or ``hub`` for MUSE's pinned hub dataset.
    data: str
    out: Path
    precisions: tuple[str, ...]
    corpus: str = "news"
    adapter: str | None = None
    merge: bool = True
    #: None: ``<out>/results``.
    results: Path | None = None
    #: None: the adapter's folder name, else the model's.
    label: str | None = None
    #: The unlearning method the evidence names (None: the label), as a sweep's ``method``; the
    #: demo passes its sweep's, so that the audit's cells are the sweep's (same key) and reused.
    method: str | None = None
    revert_tolerance: float = AuditOptions.revert_tolerance
    emulated: bool = False
    batch_size: int = 64
    device: str | None = None
    #: GPTQ calibration texts (a MUSE folder, a JSON file, news/books); see docs/precisions.md.
    calibration: str | None = None

    @property
    def results_dir(self) -> Path:
        return self.results or self.out / "results"

    @property
    def model_label(self) -> str:
        return self.label or Path(self.adapter or self.model).name

    def plan_data(self) -> dict:
        """The sweep plan (docs/sweep.md's YAML structure): the model with role method and the
        two references, each at every precision, on the one corpus."""
        precision = [
            {"name": name, "calibration": self.calibration} if self.calibration else name
            for name in self.precisions
        ]
        model = {
            "label": self.model_label,
            "role": "method",
            "pretrained": self.model,
            "method": self.method,
        }
        if self.adapter:
            model |= {"adapter": self.adapter, "merge": self.merge}
        return {
            "corpora": {self.corpus: self.data},
            "precisions": precision,
            "options": {
                "batch_size": self.batch_size,
                "device": self.device,
                "emulated": self.emulated,
            },
            "models": [
                model,
                {"label": TARGET_LABEL, "role": "target", "pretrained": self.target},
                {"label": RETRAIN_LABEL, "role": "retrain", "pretrained": self.retrain},
            ],
        }


def precision_list(text: str) -> tuple[str, ...]:
    """``--precisions fp32, nf4`` -> ``("fp32", "nf4")``."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def check_precisions(precisions: tuple[str, ...]) -> None:
    """Refuse, before any work, a list without the full precision every verdict compares with."""
    if not precisions:
        raise MuseQuantError("--precisions: give at least one, e.g. fp32,nf4")
    if not set(precisions) & set(FULL_PRECISIONS):
        raise MuseQuantError(
            f"--precisions {','.join(precisions)}: include a full precision "
            f"({' or '.join(FULL_PRECISIONS)}); every verdict compares against it"
        )


def run_audit(request: AuditRequest, *, progress: bool = True) -> Audit:
    """Check the request, run the cells not already in the results folder, audit them and write
    the report. Bad input raises :class:`MuseQuantError` before anything is written."""
    from harness_ext.sweep import run_sweep
    from harness_ext.sweep.plan import LABEL, plan_from_dict
    from leaderboards.audit import audit_results, check_report_folder, write_report

    options = AuditOptions(revert_tolerance=request.revert_tolerance)
    check_precisions(request.precisions)
    if not LABEL.fullmatch(request.model_label):
        raise MuseQuantError(
            f"label {request.model_label!r} (letters, digits and . _ + - only): pass --label NAME"
        )
    check_report_folder(request.out)
    plan = plan_from_dict(request.plan_data(), Path.cwd())
    run_sweep(plan, request.results_dir, progress=progress)
    audit = audit_results(
        request.results_dir,
        request.model_label,
        options,
        corpus=request.corpus,
        precisions=request.precisions,
    )
    write_report(audit, request.out)
    return audit


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
        help="keep the adapter unmerged on the quantized base (default: merge, then quantize)",
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
    p.add_argument("--out", type=Path, required=True, help="report folder")
    p.add_argument("--results", type=Path, help="results folder (default: OUT/results)")
    p.add_argument("--label", help="the audited model's label (default: its folder's name)")
    p.add_argument("--method", help="the unlearning method the report names (default: the label)")
    p.add_argument(
        "--revert-tolerance",
        type=float,
        default=AuditOptions.revert_tolerance,
        help="a forget retention may rise this much (absolute) over full precision and still "
        "hold; default: %(default)s",
    )
    p.add_argument(
        "--emulated", action="store_true", help="run 4-bit precisions emulated (dense, dequantized)"
    )
    p.add_argument("--batch-size", type=int, default=AuditRequest.batch_size)
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--calibration", help="GPTQ calibration texts (docs/precisions.md)")
    p.add_argument("--no-progress", action="store_true", help="no per-cell lines on stderr")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Every flag's destination is the request field of the same name.
    request = AuditRequest(**{f.name: getattr(args, f.name) for f in fields(AuditRequest)})
    audit = run_audit(request, progress=not args.no_progress)
    for warning in audit.board.warnings:
        print(f"muse-quant: warning: {warning}", file=sys.stderr)
    print(f"audit of {audit.label} on {audit.corpus.corpus} (results in {request.results_dir}):")
    print("\n".join(f"  {verdict.text}" for verdict in audit.verdicts))
    print(audit.headline)
    print(f"report written to {request.out}: {', '.join(REPORT_FILES)}")
    return audit.exit_status
