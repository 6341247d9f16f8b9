"""What the toy world and its zoo print: where they are, what the models memorized, what each
unlearning run changed."""

from __future__ import annotations

import sys
from pathlib import Path

from muse_quant.toyworld.manifest import load_manifest


def format_report(world: Path) -> str:
    """A few lines: where the world is and how much the target and retrain models memorized."""
    manifest = load_manifest(world) or {}
    lines = [
        f"toy world ({manifest.get('scale')}): {world}",
        f"  data (MUSE layout): {world}/data",
        f"  models: {world}/models/{{base,target,retrain}}",
        "  memorization (ROUGE-L F1, greedy; forget / retain):",
    ]
    for name, m in manifest.get("memorization", {}).items():
        lines.append(
            f"    {name:8s} verbatim {m['verbmem_forget']:.2f} / {m['verbmem_retain']:.2f}"
            f"   QA {m['knowmem_forget']:.2f} / {m['knowmem_retain']:.2f}"
        )
    lines.append(
        f"  its build took {manifest.get('build_seconds')} s (once: reused while intact); "
        f"config hash {manifest.get('config_hash', '')[:12]}"
    )
    return "\n".join(lines)


def reused_line(what: str, folder: Path) -> str:
    """What a build says when it finds its world or zoo (``what``) intact in ``folder``: reused,
    not built now (the report's build time is the original build's)."""
    seconds = (load_manifest(folder) or {}).get("build_seconds")
    return f"reused the {what} cached in {folder} (its build took {seconds} s; nothing rebuilt)"


def format_zoo(zoo: Path) -> str:
    """One line per zoo run: steps, seconds and the quantization codes it changed, per scheme
    its records hold (``-`` where a run's record lacks one)."""
    manifest = load_manifest(zoo) or {}
    runs = manifest.get("runs", {})
    schemes = list(dict.fromkeys(k for r in runs.values() for k in r["changed_codes"]))
    schemes = [s for s in schemes if s != "any"]
    width = {s: max(len(s), 7) for s in schemes}
    header = "  ".join(f"{s:>{width[s]}s}" for s in schemes)
    lines = [f"method zoo: {zoo}", f"  {'run':26s} steps  seconds  codes changed: {header}"]
    for name, run in runs.items():
        codes = run["changed_codes"]
        cells = "  ".join(
            f"{f'{100 * codes[s]:.2f}%' if s in codes else '-':>{width[s]}s}" for s in schemes
        )
        lines.append(f"  {name:26s} {run['steps']:5d} {run['seconds']:8.1f}  {'':15s}{cells}")
    lines.append(f"  its build took {manifest.get('build_seconds')} s (once: reused while intact)")
    return "\n".join(lines)


def log(msg: str) -> None:
    """One line of a world's or zoo's build on stderr, marked as the toy world's."""
    print(f"[toyworld] {msg}", file=sys.stderr, flush=True)
