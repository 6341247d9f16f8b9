"""The seeds' experiment: does full fine-tuning's forgetting revert at 4 bits where LoRA's holds?

Reruns the whole experiment from whatever the cache holds (a clean cache: from scratch) and
prints its table. For each unlearning seed, the world's zoo is built or reused (on the real
world: GA+GDR and NPO+GDR, each full and LoRA, NPO+GDR with SURE and trained through NF4, and the
two NF4-confined controls, with the papers' recipe: docs/unlearning.md); then one sweep
evaluates every run of every seed, the target and the retrain model at the full precision and
the 4-bit precisions; then the board's own rule (``leaderboards``, from the results files alone)
gives, per run and 4-bit precision, forget VerbMem's revert with its paired 95% interval and the
verdict, beside the fraction of NF4 and Q4_K codes the run's update changed, and per method its
seed group's durability rate (the fraction of its seeds whose forgetting holds at every 4-bit
precision). The board itself is written to ``OUT/board``.

Threads: the zoo trains one single-threaded run per core; the sweep evaluates one cell at a
time on ``--threads`` (default: one per core).

    python bench/phenomenon.py                                    # real world, seeds 0,1,2
    python bench/phenomenon.py --scale micro --seeds 0 --precisions fp32,nf4 --out /tmp/ph
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the repository importable
    sys.path.insert(0, str(ROOT))

from harness_ext.cache import cache_root  # noqa: E402
from harness_ext.errors import MuseQuantError  # noqa: E402
from harness_ext.files import check_apart  # noqa: E402
from leaderboards.collect import collect_results  # noqa: E402
from leaderboards.render.board_files import render_all  # noqa: E402
from leaderboards.robustness import compute_board  # noqa: E402
from leaderboards.scores import CorpusBoard, ModelScores  # noqa: E402
from leaderboards.verdicts import (  # noqa: E402
    NEVER_FORGOT,
    PrecisionVerdict,
    cell_at,
    interval_text,
    judge,
)
from leaderboards.write import check_board_folder, write_folder  # noqa: E402
from muse_quant.demo import demo_precisions, demo_request, reference_models, zoo_runs  # noqa: E402
from muse_quant.demo_defaults import REAL_PRECISIONS, RESULTS  # noqa: E402
from muse_quant.sweep import plan_from_dict, run_sweep  # noqa: E402
from muse_quant.threads import parse_threads, set_threads  # noqa: E402
from muse_quant.toyworld.build import world_at  # noqa: E402
from muse_quant.toyworld.config import PRETRAINED_SCALES, SCALES  # noqa: E402
from muse_quant.toyworld.manifest import load_manifest  # noqa: E402
from muse_quant.toyworld.zoo import build_zoo  # noqa: E402

#: The code schemes printed beside each revert: NF4's, and Q4_K's (what gguf-q4_k_m stores most
#: block linears in); a scheme whose library is missing prints n/a.
SCHEMES = ("nf4", "gguf-q4_k")


def parse_seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: comma-separated whole numbers") from None
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"{text!r}: a seed given twice")
    return seeds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=list(SCALES), default="real")
    parser.add_argument("--seeds", type=parse_seeds, default=(0, 1, 2), help="default: 0,1,2")
    parser.add_argument(
        "--precisions",
        type=lambda text: tuple(text.split(",")),
        help=f"with fp32 or bf16; default: the demo's for the scale ({','.join(REAL_PRECISIONS)} "
        "on the real world)",
    )
    parser.add_argument("--out", type=Path, default=Path("phenomenon"), help="default: %(default)s")
    parser.add_argument("--threads", type=parse_threads, default=os.cpu_count() or 1)
    parser.add_argument("--no-progress", action="store_true", help="no per-cell lines on stderr")
    args = parser.parse_args(argv)
    try:
        print(run(args.scale, args.seeds, args.precisions, args.out, args.threads,
                  progress=not args.no_progress))  # fmt: skip
    except MuseQuantError as e:
        print(f"phenomenon: error: {e}", file=sys.stderr)
        return 2
    return 0


def run(
    scale: str,
    seeds: tuple[int, ...],
    precisions: tuple[str, ...] | None,
    out: Path,
    threads: int,
    progress: bool = True,
) -> str:
    """Zoos, sweep and board (module docstring); returns the table. ``precisions`` None: the
    demo's default for ``scale``."""
    started = time.perf_counter()
    out = out.absolute()
    check_apart(out, "--out", [("the muse-quant cache", cache_root())])
    check_board_folder(out / "board", out / RESULTS)  # before hours of work, not after
    precisions = demo_precisions(precisions, scale in PRETRAINED_SCALES)
    world = world_at(scale)
    zoos = {seed: build_zoo(world, seed=seed) for seed in seeds}
    request = demo_request(world, precisions, out)
    models = reference_models(request) + [
        zoo_run.plan_model(seed) for seed, zoo in zoos.items() for zoo_run in zoo_runs(world, zoo)
    ]
    plan = plan_from_dict(request.plan_data() | {"models": models}, Path.cwd())
    set_threads(threads)
    run_sweep(plan, request.results_dir, progress=progress)
    board = compute_board(collect_results(request.results_dir))
    write_folder(out / "board", render_all(board))
    (corpus,) = board.corpora
    codes = {
        f"{label}-s{seed}": record.get("changed_codes", {})
        for seed, zoo in zoos.items()
        for label, record in (load_manifest(zoo) or {})["runs"].items()
    }
    seconds = time.perf_counter() - started
    return table(corpus, codes, board.options.revert_tolerance) + (
        f"\nboard: {out / 'board' / 'index.html'}; {seconds:.0f} s"
    )


def table(corpus: CorpusBoard, codes: dict[str, dict[str, float]], tolerance: float) -> str:
    """Runs x 4-bit precisions: forget VerbMem's revert [95% interval] and the verdict at each,
    the run's changed codes; then each seed group's durability rate."""
    retrain = next((m for m in corpus.references if m.role == "retrain"), None)
    quantized = [p for p in corpus.precisions if p != corpus.full_precision]
    lines = [
        f"forget VerbMem revert at each precision against {corpus.full_precision}, 95% paired "
        f"interval, verdict (tolerance {tolerance:.2f}); changed codes "
        + ", ".join(SCHEMES),
        "| run | " + " | ".join(quantized) + " | " + " | ".join(SCHEMES) + " |",
        "|---|" + "---|" * (len(quantized) + len(SCHEMES)),
    ]
    methods = sorted(corpus.methods + corpus.other_seeds, key=lambda m: m.label)
    for model in methods:
        lines.append(_row(model, retrain, corpus.full_precision, quantized, codes, tolerance))
    lines.append("")
    for group in corpus.seed_groups:
        holding = round(group.durability * len(group.seeds))
        lines.append(
            f"{group.method} ({group.mode}): forgetting holds at every 4-bit precision in "
            f"{holding} of {len(group.seeds)} seeds (durability {group.durability:.2f})"
        )
    return "\n".join(lines)


def _row(
    model: ModelScores,
    retrain: ModelScores | None,
    full_precision: str,
    quantized: list[str],
    codes: dict[str, dict[str, float]],
    tolerance: float,
) -> str:
    verdicts = {v.precision: v for v in judge(model, retrain, full_precision, tolerance) or []}
    gate = verdicts.get(full_precision)
    cells = []
    for precision in quantized:
        cell = cell_at(model, precision)
        if cell is None or cell.revert_verbmem_f is None:
            cells.append("n/a")
            continue
        interval = interval_text(cell.interval("revert_verbmem_f"))
        verdict = _verdict(gate, verdicts[precision])
        cells.append(f"{cell.revert_verbmem_f:+.2f} {interval} {verdict}")
    changed = codes.get(model.label, {})
    shares = [f"{changed[s]:.1%}" if s in changed else "n/a" for s in SCHEMES]
    return f"| {model.label} | " + " | ".join(cells + shares) + " |"


def _verdict(gate: PrecisionVerdict | None, at: PrecisionVerdict) -> str:
    """The board's word for a cell: the full-precision gate's where it fails (there is nothing
    for quantization to give back, or nothing worth keeping), else the verdict at the cell."""
    if gate is None or gate.passed:
        return at.status
    return {"no forgetting": NEVER_FORGOT}.get(gate.status, gate.status)


if __name__ == "__main__":
    sys.exit(main())
