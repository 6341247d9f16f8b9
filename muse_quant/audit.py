"""An audit: does a third party's unlearning survive quantization? (docs/audit.md)

One unlearned model (a checkpoint, or a LoRA adapter on its base), its target and retrain
references, one corpus and a set of precisions: the cells the verdict needs run through the sweep
(finished ones in the results folder are reused), then :mod:`leaderboards.audit` reads the results
files back and writes ``report.md`` and ``report.json``. The exit status is the verdict, for CI:
0 forgetting holds at every precision, 1 it does not, 2 bad input (one line; nothing written).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from harness_ext.errors import MuseQuantError
from harness_ext.files import check_apart
from harness_ext.precision_names import REFERENCE_PRECISIONS, SHIPPED_GGUF
from leaderboards.audit import Audit, AuditOptions, audit_results
from leaderboards.certificate import check_deployments, check_not_full
from leaderboards.write import check_report_folder, write_report
from model_wrappers.precisions import resolve_precision
from muse_quant.sweep import plan_from_dict, recorded_method, run_sweep
from muse_quant.sweep.names import check_label, shown

#: The labels the references' results files carry (the audited model's is ``--label``).
TARGET_LABEL, RETRAIN_LABEL = "target", "retrain"


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
    #: The durability certificate's deployments, from ``precisions`` (None: all but full).
    certify: tuple[str, ...] | None = None
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
        """``--label``, else the adapter's or the model's folder name (a GGUF file's, without
        ``.gguf``)."""
        named = Path(self.adapter or self.model)
        return self.label or (named.stem if named.suffix.lower() == ".gguf" else named.name)

    def plan_data(self) -> dict:
        """The sweep plan (docs/sweep.md's YAML structure): the model with role method and the
        two references, each at every precision, on the one corpus (``gguf-shipped`` evaluates
        the audited GGUF file itself: the model alone; the references have no such file)."""
        # Only calibrated precisions get the texts: a cell's key records them, so an fp32 cell
        # with them would not be a sweep's fp32 cell.
        precision = [
            {"name": name, "calibration": self.calibration}
            if self.calibration and takes_calibration(name)
            else name
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
        references = [p for p, name in zip(precision, self.precisions, strict=True)
                      if name != SHIPPED_GGUF]  # fmt: skip
        shared = {"precisions": references} if len(references) < len(precision) else {}
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
                {"label": TARGET_LABEL, "role": "target", "pretrained": self.target, **shared},
                {"label": RETRAIN_LABEL, "role": "retrain", "pretrained": self.retrain, **shared},
            ],
        }


def takes_calibration(precision: str) -> bool:
    """Whether a precision takes calibration texts (GPTQ, AWQ; an unknown name is the plan
    check's error). Only those get the request's ``calibration``: a caller may give it for
    every audit (the demo does) and let the precisions decide."""
    try:
        return resolve_precision(precision, {}, False).calibrated
    except MuseQuantError:
        return False


def check_precisions(precisions: tuple[str, ...]) -> None:
    """Refuse, before any work, a list without the full precision every verdict compares with."""
    if not precisions:
        raise MuseQuantError("--precisions: give at least one, e.g. fp32,nf4")
    if not set(precisions) & set(REFERENCE_PRECISIONS):
        raise MuseQuantError(
            f"--precisions {','.join(precisions)}: include a full precision "
            f"({' or '.join(REFERENCE_PRECISIONS)}); every verdict compares against it"
        )


def check_certify(certify: tuple[str, ...] | None, precisions: tuple[str, ...]) -> None:
    """Refuse, before any work, a deployment to certify that is not audited, or is the full
    precision (the board's own checks, on the precisions the audit will evaluate)."""
    check_deployments(certify, precisions, "in --precisions")
    check_not_full(certify, next(p for p in REFERENCE_PRECISIONS if p in precisions))


def check_request(request: AuditRequest) -> None:
    """Refuse, before any work, flags that mean nothing together or are out of range."""
    check_precisions(request.precisions)
    check_certify(request.certify, request.precisions)
    if not request.merge and not request.adapter:
        raise MuseQuantError(
            "--no-merge is for an adapter (--adapter PATH): it keeps the adapter unmerged on "
            "the quantized base; a full checkpoint has nothing to merge, so leave it out"
        )
    if isinstance(request.batch_size, bool) or not (
        isinstance(request.batch_size, int) and request.batch_size >= 1
    ):
        raise MuseQuantError(f"--batch-size {request.batch_size}: documents per batch, >= 1")
    flags = ("model", "target", "retrain", "data", "adapter", "label", "method", "device",
             "calibration")  # fmt: skip
    for flag in flags:
        value = getattr(request, flag)
        if value is not None and not str(value).strip():
            raise MuseQuantError(f"--{flag} is empty; give a value or leave the flag out")
    _check_outputs_outside_inputs(request)


#: The folders an audit reads.
INPUT_FLAGS = ("model", "adapter", "target", "retrain", "data")


def _check_outputs_outside_inputs(request: AuditRequest) -> None:
    """The report and the results go outside every folder the audit reads, and the report not
    among the cells (a board of the results would read it)."""
    inputs = [(f"--{name}", getattr(request, name)) for name in INPUT_FLAGS]
    for flag, output in (("--out", request.out), ("--results", request.results_dir)):
        check_apart(output, flag, inputs)
    out, results = request.out.absolute().resolve(), request.results_dir.absolute().resolve()
    if out.is_relative_to(results):
        raise MuseQuantError(
            f"--out {request.out} is {'' if out == results else 'inside '}the results folder "
            f"{request.results_dir}; put the report elsewhere (by default the results go in "
            "OUT/results)"
        )


def run_audit(request: AuditRequest, *, progress: bool = True) -> Audit:
    """Check the request, run the cells not already in the results folder, audit them and write
    the report. Bad input raises :class:`MuseQuantError` before anything is written; a cell of
    another run in the results folder is reused when it is the same computation and never
    overwritten."""
    options = AuditOptions(revert_tolerance=request.revert_tolerance, certify=request.certify)
    check_request(request)
    label = request.model_label
    check_label(label, f"label {shown(label)}", "pass --label NAME")
    if label in (TARGET_LABEL, RETRAIN_LABEL):
        raise MuseQuantError(
            f"label {label!r} is the {label} reference's; name the audited model with --label NAME"
        )
    check_report_folder(request.out)
    if request.method is None:  # the method a sweep recorded for this label, so its cells match
        request = replace(request, method=recorded_method(request.results_dir, label))
    plan = plan_from_dict(request.plan_data(), Path.cwd())
    run_sweep(plan, request.results_dir, progress=progress, replace_others=False)
    audit = audit_results(
        request.results_dir,
        request.model_label,
        options,
        corpus=request.corpus,
        precisions=request.precisions,
    )
    write_report(audit, request.out)
    return audit
