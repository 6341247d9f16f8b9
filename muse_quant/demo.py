"""``muse-quant demo``: the README's main job, the whole story on the toy world.

World -> method zoo (eight natural unlearning runs, SURE and quantization-aware NPO+GDR, two
NF4-confined controls) -> sweep (every model at every precision on the world's news corpus) ->
leaderboard -> audits of one full fine-tuning and one LoRA run -> a headline: which methods'
forgetting reverts after quantization and which holds. Each stage is cached or resumable (the
world and the zoo are cached by configuration, the sweep skips finished cells), so a second run,
or one after a kill, redoes nothing finished.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from harness_ext.cache import cache_root
from harness_ext.errors import MuseQuantError
from harness_ext.files import check_apart
from harness_ext.precision_names import split_deployment
from leaderboards.audit import REPORT_MARKDOWN, audit_results
from leaderboards.collect import Collection, collect_results
from leaderboards.render.board_files import render_all
from leaderboards.render.console import format_summary
from leaderboards.robustness import Board, compute_board
from leaderboards.verdicts import LOST_UTILITY, NEVER_FORGOT, PrecisionVerdict, model_verdict
from leaderboards.write import check_board_folder, check_report_folder, write_folder
from model_wrappers.calibration import world_calibration
from model_wrappers.precisions import resolve_precision
from model_wrappers.precisions.gguf import GGUF, GGUF_INSTALL
from model_wrappers.precisions.gptq import GPTQ
from model_wrappers.precisions.gptqmodel_checkpoints import GPTQMODEL_INSTALL
from muse_quant.audit import AuditRequest, check_precisions, run_audit
from muse_quant.demo_defaults import (
    AUDITED,
    AUDITS,
    BOARD,
    CORPUS,
    DEFAULT_OUT,
    DEFAULT_PRECISIONS,
    REAL_PRECISIONS,
    RESULTS,
)
from muse_quant.sweep import Plan, plan_from_dict, run_sweep
from muse_quant.toyworld.build import world_at
from muse_quant.toyworld.config import PRETRAINED_SCALES
from muse_quant.toyworld.manifest import load_manifest
from muse_quant.toyworld.report import format_report, format_zoo
from muse_quant.toyworld.zoo import build_zoo

STAGES = 6


def run_demo(
    scale: str = "tiny",
    out: Path = DEFAULT_OUT,
    precisions: tuple[str, ...] | None = None,
    progress: bool = True,
) -> int:
    """The whole story (module docstring); ``precisions`` None: :data:`DEFAULT_PRECISIONS`, or
    on the real world :data:`REAL_PRECISIONS`."""
    started = time.perf_counter()
    out = out.absolute()
    precisions = demo_precisions(precisions, scale in PRETRAINED_SCALES)
    _check_out(out)
    timings: dict[str, float] = {}

    with _stage(1, f"toy world ({scale}): build or reuse", "world", timings):
        world = world_at(scale)
        print(format_report(world))
    with _stage(2, "method zoo: GA/NPO x GDR/KLR x full/LoRA, build or reuse", "zoo", timings):
        zoo = build_zoo(world)
        print(format_zoo(zoo))

    plan, base, runs = demo_sweep_plan(world, zoo, precisions, out)
    cells = len(plan.models) * len(precisions)
    title = (
        f"sweep: {len(plan.models)} models x {len(precisions)} precisions on {CORPUS} "
        f"({cells} cells)"
    )
    with _stage(3, title, "sweep", timings):
        paths = run_sweep(plan, base.results_dir, progress=progress)

    with _stage(4, f"leaderboard -> {out / BOARD}", "leaderboard", timings):
        board = _board(base.results_dir, paths)
        write_folder(out / BOARD, render_all(board))
        print(format_summary(board).lstrip("\n"))

    reports = []
    by_label = {r.label: r for r in runs}
    with _stage(5, f"audits of {' and '.join(AUDITED)} -> {out / AUDITS}", "audits", timings):
        for zoo_run in (by_label[label] for label in AUDITED):
            request = replace(
                base,
                model=zoo_run.pretrained,
                adapter=zoo_run.adapter,
                label=zoo_run.label,
                method=zoo_run.method,
                out=out / AUDITS / zoo_run.label,
            )
            audit = run_audit(request, progress=False)
            print(f"{zoo_run.label} ({zoo_run.mode}): {audit.headline}")
            reports.append(request.out / REPORT_MARKDOWN)

    with _stage(6, "headline: does forgetting survive quantization?", "headline", timings):
        print(headline(base.results_dir, [r.label for r in runs], precisions))

    print(f"\nleaderboard: {out / BOARD / 'index.html'}")
    print("audit reports: " + ", ".join(str(path) for path in reports))
    spent = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in timings.items())
    print(f"demo finished in {time.perf_counter() - started:.1f} s ({spent})")
    return 0


@dataclass(frozen=True)
class ZooRun:
    """One zoo run as the sweep and the audits name it."""

    label: str
    method: str
    #: A checkpoint folder, or for a LoRA run the base its adapter was trained on (the target).
    pretrained: str
    adapter: str | None

    @property
    def mode(self) -> str:
        return "lora" if self.adapter else "full"

    def plan_model(self, seed: int | None = None) -> dict[str, object]:
        """The run as a sweep plan's model; with ``seed``, labelled ``<label>-s<seed>`` and
        recorded as that seed (the board groups a method's seeds)."""
        model = {"label": self.label, "role": "method", "method": self.method,
                 "pretrained": self.pretrained, "adapter": self.adapter}  # fmt: skip
        if seed is not None:
            model.update(label=f"{self.label}-s{seed}", seed=seed)
        return model


def demo_request(world: Path, precisions: tuple[str, ...], out: Path) -> AuditRequest:
    """The evaluation options of a sweep of ``world``'s models at ``precisions`` on its news
    data, results in ``out``, as one audit request (the target audited)."""
    target, retrain = world / "models" / "target", world / "models" / "retrain"
    return AuditRequest(
        model=str(target),
        target=str(target),
        retrain=str(retrain),
        data=str(world / "data"),
        out=out / AUDITS,
        precisions=precisions,
        corpus=CORPUS,
        results=out / RESULTS,
        calibration=world_calibration(world),
    )


def reference_models(request: AuditRequest) -> list[dict[str, object]]:
    """The target and the retrain model as a sweep plan's models."""
    return [
        {"label": "target", "role": "target", "pretrained": request.target},
        {"label": "retrain", "role": "retrain", "pretrained": request.retrain},
    ]


def demo_sweep_plan(
    world: Path, zoo: Path, precisions: tuple[str, ...], out: Path
) -> tuple[Plan, AuditRequest, list[ZooRun]]:
    """The demo's sweep: target, retrain and every zoo run at ``precisions`` on the news data,
    with the audit request whose options it shares, and the zoo runs."""
    # One request holds the evaluation options for the sweep and both audits, so every audit
    # cell has the sweep's key and is reused, not evaluated again.
    runs = zoo_runs(world, zoo)
    base = demo_request(world, precisions, out)
    models = reference_models(base) + [r.plan_model() for r in runs]
    plan = plan_from_dict(base.plan_data() | {"models": models}, Path.cwd())
    return plan, base, runs


def zoo_runs(world: Path, zoo: Path) -> list[ZooRun]:
    """The zoo's runs in its manifest's order; a folder with a peft adapter is a LoRA run."""

    runs = []
    for label, run in (load_manifest(zoo) or {}).get("runs", {}).items():
        folder = zoo / label
        lora = (folder / "adapter_config.json").is_file()
        pretrained = world / "models" / "target" if lora else folder
        runs.append(ZooRun(label, run["method"], str(pretrained), str(folder) if lora else None))
    return runs


#: The optional libraries of the default precisions: family -> (module, what to install).
OPTIONAL = {GPTQ: ("gptqmodel", GPTQMODEL_INSTALL), GGUF: ("llama_cpp", GGUF_INSTALL)}


def demo_precisions(given: tuple[str, ...] | None, real: bool) -> tuple[str, ...]:
    """The precisions to run, checked before any work. The default list (the real world's on
    a ``real`` world) keeps GPTQ and GGUF only when their libraries are installed (and says so
    when one is not); a list given explicitly is kept as is, so asking for GPTQ without
    gptqmodel is the loader's one-line error."""

    default = REAL_PRECISIONS if real else DEFAULT_PRECISIONS
    names = default if given is None else given
    check_precisions(names)
    # every name resolved now: an unknown one is its one-line error before any work
    families = {name: resolve_precision(name).family for name in names}
    for family, (module, install) in OPTIONAL.items() if given is None else ():
        needing = [name for name in names if families[name] is family]
        # Looked up, not imported: importing prints gptqmodel's banner; the sweep imports it
        # later, with library output going to its log.
        if needing and importlib.util.find_spec(module) is None:
            print(
                f"muse-quant: note: {', '.join(needing)} skipped, {module} is not installed; "
                f"{install}",
                file=sys.stderr,
            )
            names = tuple(name for name in names if name not in needing)
    return names


def _check_out(out: Path) -> None:
    """Refuse an --out the demo could not fill, before the long stages: not a folder, not
    writable, or holding a board or reports that muse-quant did not write."""

    if out.exists() and not out.is_dir():
        raise MuseQuantError(f"--out {out}: not a folder")
    # Inside the cache the demo's files would land in a world or zoo it reads and checks.
    check_apart(out, "--out", [("the muse-quant cache", cache_root())])
    for name in AUDITED:
        check_report_folder(out / AUDITS / name)
    check_board_folder(out / BOARD, out / RESULTS)


@contextlib.contextmanager
def _stage(number: int, title: str, name: str, timings: dict[str, float]) -> Iterator[None]:
    """A one-line banner, then the stage; its seconds go into ``timings`` for the last line."""
    print(f"\n== [{number}/{STAGES}] {title}", flush=True)
    started = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - started
    sys.stdout.flush()


def _board(results: Path, paths: Sequence[Path]) -> Board:
    """The board of this run's cells only: a results folder reused with other precisions (or
    left by an older zoo) may hold more."""

    results = results.resolve()
    collection = collect_results(results)
    ours = {path.relative_to(results).as_posix() for path in paths}
    rows = tuple(row for row in collection.rows if row.source in ours)
    return compute_board(Collection(rows, tuple(sorted(ours)), collection.warnings))


#: The headline's groups by the board's verdict (:func:`leaderboards.verdicts.model_verdict`),
#: in the order it prints them (``{full}``: the full precision).
GROUPS = {
    "reverts": "revert after quantization",
    "inconclusive": "cannot tell yet: an interval straddles the revert tolerance",
    "holds": "forget at {full} and hold at every quantized precision",
    NEVER_FORGOT: "did not forget at {full} (nothing for quantization to give back)",
    LOST_UTILITY: "lost their utility at {full} (nothing worth keeping)",
    "n/a": "cannot tell: a number the rule needs is n/a",
}
REVERTS, HOLDS, NO_FORGETTING, UNKNOWN = (
    GROUPS["reverts"], GROUPS["holds"], GROUPS[NEVER_FORGOT], GROUPS["n/a"]
)  # fmt: skip


def headline(results: Path, labels: Sequence[str], precisions: Sequence[str]) -> str:
    """Every run's verdict over the quantized precisions, grouped so that a reader sees at a
    glance which revert and which hold, then, for each other deployment (pruning, relearning),
    which runs keep their forgetting under it: the audit's verdicts
    (:func:`leaderboards.audit.audit_results`, from the results files alone), grouped by the
    board's rule; one rule for the headline, the board, the reports and ``muse-quant audit``."""
    deployments = [p for p in precisions if split_deployment(p)[0]]
    groups: dict[str, list[list[str]]] = {group: [] for group in GROUPS}
    #: label -> the verdict at full precision, and at each deployment (one audit per run: a
    #: precision's verdict reads that precision's cells alone).
    verdicts: dict[str, tuple[PrecisionVerdict, dict[str, PrecisionVerdict]]] = {}
    for label in labels:
        audit = audit_results(results, label, corpus=CORPUS, precisions=precisions)
        full, *others = audit.verdicts
        verdicts[label] = full, {v.precision: v for v in others}
        ours = [full, *(v for v in others if v.precision not in deployments)]
        group, _ = model_verdict(ours)
        texts = [] if group == "holds" else [v.text for v in ours if not v.passed]
        model = f"    {label} ({audit.model.method}, {audit.model.mode})"
        groups[group].append([model, *(f"      {text}" for text in texts)])
    quantized = [v.precision for v in ours[1:]]
    lines = [f"{CORPUS}: each run at {', '.join(quantized)}, compared with "
             f"itself at {full.precision} (the rule: docs/audit.md)"]  # fmt: skip
    for group, entries in groups.items():
        if entries:
            header = GROUPS[group].format(full=full.precision)
            lines.append(f"  {header}: {len(entries)} of {len(labels)}")
            lines += [line for entry in entries for line in entry]
    for deployment in deployments:
        lines += _under(verdicts, deployment)
    return "\n".join(lines)


#: How :func:`_under` words each verdict at one deployment.
UNDER = {
    "holds": "keep their forgetting",
    "reverts": "give it back",
    "inconclusive": "cannot tell yet",
}


def _under(
    verdicts: dict[str, tuple[PrecisionVerdict, dict[str, PrecisionVerdict]]], deployment: str
) -> list[str]:
    """Which runs keep their forgetting under one deployment (its verdict by the same rule),
    from each run's verdicts at full precision and at every precision."""
    found: dict[str, list[str]] = {}
    for label, (full, at) in verdicts.items():
        status = "gate" if full.status != "forgets" else at[deployment].status
        found.setdefault(status, []).append(label)
    lines = [f"  under {deployment} (docs/deployments.md):"]
    for status, word in UNDER.items():
        if found.get(status):
            lines.append(f"    {word}: {len(found[status])} of {len(verdicts)}: "
                         f"{', '.join(found[status])}")  # fmt: skip
    others = found.get("gate", []) + found.get("n/a", [])
    if others:
        lines.append(f"    not judged (no forgetting to keep, or a number is n/a): "
                     f"{', '.join(others)}")  # fmt: skip
    return lines
