"""An audit's report: ``report.md`` for people and ``report.json`` for programs (docs/audit.md).

The evidence table is the board's per-precision table (its columns, minus the rank) and the facts
are the board's, so a report and a leaderboard say the same thing the same way. Every string from
a results file goes through :func:`escape_markdown` (:func:`escape_cell` in a table). The JSON
keys follow the dataclasses of :mod:`leaderboards.audit` and :mod:`leaderboards.robustness`;
nothing in it depends on when the report was made.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from harness_ext import __version__
from leaderboards.audit import (
    GENERATOR,
    REPORT_JSON,
    REPORT_MARKDOWN,
    Audit,
    CellProvenance,
)
from leaderboards.intervals import DESCRIPTION as INTERVALS
from leaderboards.render.columns import CELL_COLUMNS, RANK
from leaderboards.render.describe import facts
from leaderboards.render.markdown import escape_cell, escape_markdown, markdown_table
from leaderboards.scores import CRITERIA
from leaderboards.verdicts import VERDICT_RULE

SCHEMA_VERSION = 1
#: The evidence table: the board's per-precision columns; an audit ranks nothing.
EVIDENCE_COLUMNS = tuple(column for column in CELL_COLUMNS if column is not RANK)
#: Board facts a report does not state (it ranks nothing).
_NOT_STATED = ("Ranking",)


def report_to_dict(audit: Audit) -> dict[str, Any]:
    """The JSON document of an audit (schema :data:`SCHEMA_VERSION`)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "generator": GENERATOR,
        "muse_quant_version": __version__,
        "model": audit.label,
        "corpus": audit.corpus.corpus,
        "passed": audit.passed,
        "exit_status": audit.exit_status,
        "verdict": audit.headline,
        "verdicts": [{**asdict(verdict), "passed": verdict.passed} for verdict in audit.verdicts],
        "certificate": asdict(audit.certificate) if audit.certificate else None,
        "rule": {
            "text": VERDICT_RULE,
            "revert_tolerance": audit.options.revert_tolerance,
            "intervals": INTERVALS,
        },
        "options": asdict(audit.options.robustness),
        "criteria": dict(CRITERIA),
        "evidence": asdict(audit.corpus),
        "provenance": {
            "task_versions": dict(audit.task_versions),
            "cells": [asdict(cell) for cell in audit.provenance],
        },
        "warnings": list(audit.board.warnings),
    }


def render_json(audit: Audit) -> str:
    return json.dumps(report_to_dict(audit), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def _joined(mapping: Mapping[str, Any] | None, separator: str = " ") -> str:
    """``k v, k v`` (``k=v`` with ``separator="="``); ``none`` for an empty or missing mapping."""
    if not mapping:
        return "none"
    return ", ".join(f"{key}{separator}{value}" for key, value in mapping.items())


def _compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _provenance_lines(cell: CellProvenance) -> list[str]:
    """What one cell's results file says about how its numbers were made, as list items."""
    lines = [
        f"results file: {cell.source}",
        f"cell key: {cell.cell_key or 'none (not written by a sweep)'}",
        f"lm-eval: {cell.lm_eval_version or 'unknown'}",
    ]
    made = cell.muse_provenance
    if not made:
        return lines + ["provenance: none in the results file (not evaluated by the muse model)"]
    adapter = made.get("adapter")
    precision = made.get("precision") or {}
    calibration = precision.get("calibration")
    device = made.get("device") or {}
    lines += [
        f"pretrained: {made.get('pretrained')}",
        f"weights sha256: {_joined(made.get('weights_sha256'))}",
        "adapter: none"
        if not adapter
        else f"adapter: {adapter.get('path')}, "
        f"{'merged' if adapter.get('merged') else 'not merged'}, "
        f"files sha256: {_joined(adapter.get('files_sha256'))}",
        f"precision: {precision.get('name')} ({precision.get('library')}"
        f"{', emulated' if precision.get('emulated') else ''}), "
        f"options: {_joined(precision.get('options'), '=')}",
        f"library config: {_compact(precision.get('library_config'))}",
        "calibration: none"
        if not calibration
        else f"calibration: {calibration.get('source')}, {calibration.get('n_texts')} texts, "
        f"sha256 {calibration.get('sha256')}",
        f"libraries: {_joined(made.get('libraries'))}",
        f"device: {device.get('device')} ({device.get('name')}, "
        f"{device.get('torch_threads')} torch threads)",
    ]
    return lines


def certificate_line(audit: Audit) -> str:
    """``**Durability certificate**: durable at ε=0.10 over {nf4}: 1/1 seed`` and the seed's
    worst deployment (the rule is among the evidence's facts)."""
    certificate = audit.certificate
    if certificate is None:
        return "**Durability certificate**: n/a (no quantized precision audited)"
    seeds = "; ".join(seed.text for seed in certificate.seeds)
    return f"**Durability certificate**: {escape_markdown(f'{certificate.text} ({seeds})')}"


def render_markdown(audit: Audit) -> str:
    """The report: headline, a verdict per precision, the rule, the evidence, the provenance."""
    corpus = audit.corpus
    out = [
        f"# Unlearning audit: {escape_markdown(audit.label)}",
        "",
        f"**{escape_markdown(audit.headline)}**",
        "",
        f"Made by `muse-quant audit` {__version__} from {len(audit.provenance)} lm-eval results "
        f"files; exit status {audit.exit_status} ({'pass' if audit.passed else 'fail'}).",
        "",
        "## Verdict per precision",
        "",
        "| Precision | Verdict | Why |",
        "|---|---|---|",
    ]
    out += [
        f"| {escape_cell(v.precision)} | {v.status} | {escape_cell(v.text)} |"
        for v in audit.verdicts
    ]
    out += ["", certificate_line(audit)]
    out += [
        "",
        f"Rule (revert tolerance {audit.options.revert_tolerance:g}): "
        + escape_markdown(VERDICT_RULE),
        "",
        escape_markdown(f"Intervals: {INTERVALS}."),
        "",
        f"## Evidence ({escape_markdown(corpus.corpus)})",
        "",
    ]
    out += [
        f"- **{name}**: {escape_markdown(text)}"
        for name, text in facts(audit.board, corpus)
        if name not in _NOT_STATED
    ]
    models = (audit.model, *corpus.references)
    out += ["", markdown_table(EVIDENCE_COLUMNS, [(m, c) for m in models for c in m.cells])]
    notes = [*corpus.notes, *audit.board.warnings]
    if notes:
        out += ["", "Notes:", ""] + [f"- {escape_markdown(note)}" for note in notes]
    versions = _joined(audit.task_versions)
    out += ["", "## Provenance", "", f"MUSE task versions: {escape_markdown(versions)}."]
    for cell in audit.provenance:
        title = f"{cell.label} ({cell.role}) at {cell.precision}"
        out += ["", f"### {escape_markdown(title)}", ""]
        out += [f"- {escape_markdown(line)}" for line in _provenance_lines(cell)]
    return "\n".join(out) + "\n"


def render_report(audit: Audit) -> dict[str, str]:
    """``{file name: text}`` of the report's files."""
    return {REPORT_MARKDOWN: render_markdown(audit), REPORT_JSON: render_json(audit)}
