"""What the toy world and its zoo print: where they are, what the models memorized, what each
unlearning run changed."""

from __future__ import annotations

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
        f"  built in {manifest.get('build_seconds')} s; config hash "
        f"{manifest.get('config_hash', '')[:12]}"
    )
    return "\n".join(lines)


def format_zoo(zoo: Path) -> str:
    """One line per zoo run: steps, seconds and the 4-bit codes it changed."""
    manifest = load_manifest(zoo) or {}
    lines = [
        f"method zoo: {zoo}",
        f"  {'run':26s} steps  seconds  codes changed: nf4  rtn-w4g64",
    ]
    for name, run in manifest.get("runs", {}).items():
        codes = run["changed_codes"]
        lines.append(
            f"  {name:26s} {run['steps']:5d} {run['seconds']:8.1f}"
            f"  {100 * codes['nf4']:17.2f}% {100 * codes['rtn-w4g64']:9.2f}%"
        )
    lines.append(f"  built in {manifest.get('build_seconds')} s")
    return "\n".join(lines)
