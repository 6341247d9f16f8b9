"""Benchmark: the demo's sweep on the local executor vs Ray with two one-thread workers, one run.

The demo's 84 cells (target, retrain and the zoo's 12 runs x the demo's six precisions on the
tiny world's news data) are swept twice from scratch into two results folders, each in a
fresh ``muse-quant sweep`` process: ``--executor local`` (one cell after another on one thread)
and ``--executor ray --ray-address auto`` on a Ray cluster of this machine started with two
CPUs (``ray start --head --num-cpus 2``: two workers of one thread). GPTQ
checkpoints come from the cache in both (the first run fills it). It prints the wall-clock ratio
and the mean time per cell on each executor, from each sweep's own per-cell lines; a third sweep
on Ray with one worker separates Ray's own per-cell overhead from two workers sharing two cores.

    python bench/bench_sweep.py
    python bench/bench_sweep.py --precisions fp32,nf4     # a smaller grid
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the repository importable
    sys.path.insert(0, str(ROOT))

from muse_quant.demo import demo_sweep_plan  # noqa: E402
from muse_quant.demo_defaults import DEFAULT_PRECISIONS  # noqa: E402
from muse_quant.toyworld.build import build_world  # noqa: E402
from muse_quant.toyworld.zoo import build_zoo  # noqa: E402

CELL_LINE = re.compile(r"^\[\d+/\d+\] .*: (?P<seconds>[0-9.]+) s")


def plan_file(folder: Path, precisions: tuple[str, ...]) -> Path:
    """The demo's sweep plan as YAML (the same models, options and precisions)."""
    world = build_world(scale="tiny")
    plan, _, _ = demo_sweep_plan(world, build_zoo(world), precisions, folder)
    options = plan.options
    data = {
        "corpora": dict(plan.corpora),
        "precisions": [
            {"name": p.name, "emulated": bool(p.emulated), **(
                {"calibration": p.calibration} if p.calibration else {}), **p.options}
            for p in plan.precisions
        ],
        "options": {"batch_size": options.batch_size, "device": options.resolved_device,
                    "emulated": options.emulated, "bootstrap_iters": options.bootstrap_iters},
        "models": [
            {"label": m.label, "role": m.role, "pretrained": m.pretrained,
             **({"method": m.method} if m.method else {}),
             **({"adapter": m.adapter} if m.adapter else {})}
            for m in plan.models
        ],
    }  # fmt: skip
    path = folder / "plan.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def sweep(plan: Path, results: Path, executor: str) -> tuple[float, list[float]]:
    """Wall time of one ``muse-quant sweep`` process and the seconds of each cell it ran."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CI": "true"}
    address = ["--ray-address", "auto"] if executor == "ray" else []
    cmd = [sys.executable, "-m", "muse_quant", "sweep", str(plan), "--results", str(results),
           "--executor", executor, *address]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"bench: the {executor} sweep failed:\n{done.stderr[-3000:]}")
    cells = [float(m["seconds"]) for line in done.stderr.splitlines()
             if (m := CELL_LINE.match(line))]  # fmt: skip
    return wall, cells


def ray_sweep(plan: Path, results: Path, cpus: int) -> tuple[float, list[float]]:
    """The sweep on a Ray cluster of this machine with ``cpus`` one-thread workers."""
    ray_cli = Path(sys.executable).with_name("ray")
    start = [str(ray_cli), "start", "--head", "--num-cpus", str(cpus), "--disable-usage-stats"]
    subprocess.run(start, check=True, capture_output=True)
    try:
        return sweep(plan, results, "ray")
    finally:
        subprocess.run([str(ray_cli), "stop"], check=False, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precisions", default=",".join(DEFAULT_PRECISIONS))
    args = parser.parse_args()
    precisions = tuple(args.precisions.split(","))
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        folder = Path(tmp)
        plan = plan_file(folder, precisions)
        ray_wall, ray_cells = ray_sweep(plan, folder / "ray", cpus=2)
        one_wall, one_cells = ray_sweep(plan, folder / "ray-one", cpus=1)
        local_wall, local_cells = sweep(plan, folder / "local", "local")

    def mean(cells: list[float]) -> float:
        return sum(cells) / max(1, len(cells))

    print(
        f"{len(local_cells)} cells ({len(precisions)} precisions), tiny world, one thread per cell"
    )
    print(
        f"local executor: {local_wall:.0f} s; Ray, two workers: {ray_wall:.0f} s: "
        f"{local_wall / ray_wall:.2f}x (goal >= 1.7x); Ray, one worker: {one_wall:.0f} s"
    )
    print(
        f"mean per cell: local {mean(local_cells):.2f} s; Ray, one worker {mean(one_cells):.2f} s "
        f"(Ray's own per-cell overhead {100 * (mean(one_cells) / mean(local_cells) - 1):+.1f}%, "
        f"goal <= 5%); Ray, two workers sharing the two cores {mean(ray_cells):.2f} s"
    )


if __name__ == "__main__":
    main()
