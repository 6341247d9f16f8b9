"""One lm-eval results file read into rows, one per corpus it holds: who, what, at which precision.

A row's identity comes from the ``muse_quant`` key the sweep writes (``schema``, ``label``,
``role``, ``method``, ``mode``, ``corpus``, ``precision``); for other files the label is
``pretrained`` (``+adapter``) from ``config.model_args``, the precision comes from
``config.muse_provenance.precision.name`` or the model arguments, and the corpus from the task
names. Every score is checked to be a number in its range; a file that is not valid JSON is an
error, not a skip. A model evaluated from a GGUF file says so in
``config.muse_provenance.gguf_source`` (its sha256 and type, shipped or dequantized), which a row
keeps as its :class:`GgufOrigin`. Its own module because a file is read the same way wherever it
comes from: ``collect`` reads a folder of them, the audit reads its own.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness_ext.doc_scores import (
    DOC_SCORES_FILE,
    TaskScores,
    read_doc_scores,
    read_lm_eval_samples,
)
from harness_ext.errors import MuseQuantError
from harness_ext.precision_names import gguf_file_type_bits, precision_from_model_args

ROLES = ("target", "retrain", "method")
#: The ``muse_quant`` key's schema this reader understands.
MUSE_QUANT_SCHEMA = 1
MUSE_TASK = re.compile(r"^muse_(?P<corpus>.+)_(?P<task>verbmem_f|knowmem_f|knowmem_r|privleak)$")
_AUC_KEY = re.compile(r"^auc_(?P<attack>.+),none$")


@dataclass(frozen=True)
class GgufOrigin:
    """The GGUF file a row's model was evaluated from (``gguf_source`` in its provenance)."""

    sha256: str
    #: ``general.file_type`` (``MOSTLY_Q8_0``), None when the file says none.
    file_type: str | None
    bits: int | None
    #: The file itself on llama.cpp (``gguf-shipped``), else built from its dequantized tensors.
    shipped: bool


@dataclass(frozen=True)
class ResultRow:
    """One model at one precision on one corpus, as its results file reported it.

    Scores are the file's own (x 100 for VerbMem/KnowMem; AUCs in [0, 1]); None where the file
    lacks that task. ``aucs`` maps an attack (``mink_40``, ``zlib``, ...) to its AUC.
    """

    label: str
    role: str | None
    method: str | None
    mode: str | None
    corpus: str
    precision: str
    verbmem_f: float | None
    knowmem_f: float | None
    knowmem_r: float | None
    aucs: Mapping[str, float]
    data: str | None
    source: str
    date: float | None
    #: The unlearning seed the file records (None: not said).
    seed: int | None = None
    #: Per task (``verbmem_f``, ``knowmem_f``, ``knowmem_r``, ``privleak``) its per-document
    #: scores, from the ``scores.json`` beside the file; None when there is none.
    doc_scores: Mapping[str, TaskScores] | None = None
    #: The GGUF file the model was evaluated from (None: a Hugging Face checkpoint).
    gguf: GgufOrigin | None = None


def model_args_of(data: Mapping[str, Any]) -> dict[str, Any]:
    """``config.model_args`` as a dict (older lm-eval wrote it as a ``k=v,k=v`` string)."""
    args = (data.get("config") or {}).get("model_args") or {}
    if isinstance(args, str):
        pairs = (item.split("=", 1) for item in args.split(",") if "=" in item)
        return {k.strip(): v.strip() for k, v in pairs}
    return dict(args) if isinstance(args, Mapping) else {}


def _is_results_file(data: Any) -> bool:
    return isinstance(data, dict) and all(
        isinstance(data.get(key), dict) for key in ("results", "configs", "versions")
    )


def read_results_file(path: Path) -> dict[str, Any] | None:
    """The parsed file, or None when it is JSON but not an lm-eval results file.

    Invalid JSON is an error rather than a skip: a truncated results file left out silently
    would change the board.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise MuseQuantError(
            f"{path}: not valid JSON ({e.msg}, line {e.lineno}); a truncated results file? "
            "re-run its evaluation or move it out of the results folder"
        ) from None
    except (UnicodeDecodeError, OSError) as e:
        raise MuseQuantError(f"{path}: cannot read it ({e})") from None
    return data if _is_results_file(data) else None


def _checked(path: Path, task: str, key: str, value: Any, what: str, top: float) -> float:
    """``value`` as a float, or a one-line error naming the file and the key when it is not a
    finite number in [0, top] (a damaged file, or not a muse-quant result)."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not (number and math.isfinite(value) and 0 <= value <= top):
        raise MuseQuantError(
            f"{path}: {task} {key} = {value!r} is not {what} in [0, {top:g}]; re-run that cell "
            "or remove the file"
        )
    return float(value)


def _score(path: Path, results: Mapping[str, Any], task: str, metric: str) -> float | None:
    """A memorization score (ROUGE-L F1 x 100); None when the file has no such task."""
    key = f"{metric},none"
    if key not in (results.get(task) or {}):
        return None
    return _checked(path, task, key, results[task][key], "a score", 100)


def _aucs(path: Path, results: Mapping[str, Any], task: str) -> dict[str, float]:
    return {
        match.group("attack"): _checked(path, task, key, value, "an AUC", 1)
        for key, value in (results.get(task) or {}).items()
        if (match := _AUC_KEY.match(key)) is not None and "_stderr" not in key
    }


def _identity(path: Path, data: Mapping[str, Any]) -> dict[str, Any] | None:
    """The sweep's ``muse_quant`` key, checked; None for files written without it."""
    ident = data.get("muse_quant")
    if ident is None:
        return None
    schema = ident.get("schema") if isinstance(ident, dict) else None
    if schema != MUSE_QUANT_SCHEMA:
        raise MuseQuantError(
            f"{path}: muse_quant key with schema {schema!r}; this muse-quant reads schema "
            f"{MUSE_QUANT_SCHEMA}"
        )
    for key in ("label", "corpus", "precision"):
        if not isinstance(ident.get(key), str) or not ident[key]:
            raise MuseQuantError(f"{path}: muse_quant.{key} must be a non-empty string")
    if ident.get("role") not in ROLES:
        raise MuseQuantError(f"{path}: muse_quant.role {ident.get('role')!r} is not one of {ROLES}")
    return ident


def _gguf_origin(path: Path, data: Mapping[str, Any]) -> GgufOrigin | None:
    """The ``gguf_source`` block of the file's provenance, checked (None: there is none)."""
    provenance = (data.get("config") or {}).get("muse_provenance")
    block = provenance.get("gguf_source") if isinstance(provenance, Mapping) else None
    if block is None:
        return None
    sha256 = block.get("sha256") if isinstance(block, Mapping) else None
    file_type = block.get("file_type") if isinstance(block, Mapping) else None
    if not (isinstance(sha256, str) and sha256) or not isinstance(file_type, str | None):
        raise MuseQuantError(
            f"{path}: config.muse_provenance.gguf_source needs a sha256 and a file_type string; "
            "re-run that cell or remove the file"
        )
    bits = gguf_file_type_bits(file_type) if file_type else None
    return GgufOrigin(sha256, file_type, bits, block.get("shipped") is True)


def _foreign_label(path: Path, model_args: Mapping[str, Any]) -> str:
    pretrained = model_args.get("pretrained")
    if not pretrained:
        raise MuseQuantError(
            f"{path}: no muse_quant key and no pretrained in config.model_args, so no label"
        )
    adapter = model_args.get("adapter") or model_args.get("peft")
    return f"{pretrained}+{adapter}" if adapter else str(pretrained)


def _foreign_precision(path: Path, data: Mapping[str, Any], model_args: Mapping[str, Any]) -> str:
    config = data.get("config") or {}
    named = ((config.get("muse_provenance") or {}).get("precision") or {}).get("name")
    precision = named or precision_from_model_args(model_args, config.get("model_dtype"))
    if precision is None:
        raise MuseQuantError(
            f"{path}: cannot tell its precision (no muse_quant key, no "
            "config.muse_provenance.precision.name, no precision/dtype/load_in_4bit/load_in_8bit "
            "model argument, no model_dtype)"
        )
    return precision


def rows_from_results(
    path: Path, data: Mapping[str, Any], source: str
) -> tuple[list[ResultRow], list[str]]:
    """The rows one results file holds (one per corpus), and warnings about missing tasks.

    Roles stay as the file says (None for foreign files); ``collect.collect_results`` resolves
    them.
    """
    results = data["results"]
    tasks_by_corpus: dict[str, set[str]] = {}
    for name in results:
        match = MUSE_TASK.match(name)
        if match:
            tasks_by_corpus.setdefault(match.group("corpus"), set()).add(match.group("task"))
    ident = _identity(path, data)
    model_args = model_args_of(data)
    if ident is not None:
        if ident["corpus"] not in tasks_by_corpus:
            raise MuseQuantError(
                f"{path}: muse_quant.corpus is {ident['corpus']!r} but the file holds no "
                f"muse_{ident['corpus']}_* results"
            )
        tasks_by_corpus = {ident["corpus"]: tasks_by_corpus[ident["corpus"]]}
        label, precision, role = ident["label"], ident["precision"], ident["role"]
        method, mode = ident.get("method"), ident.get("mode")
        seed = ident.get("seed") if isinstance(ident.get("seed"), int) else None
    elif not tasks_by_corpus:
        return [], []
    else:
        label, role, method, mode = _foreign_label(path, model_args), None, None, None
        seed = None
        precision = _foreign_precision(path, data, model_args)
    rows, warnings = [], []
    gguf = _gguf_origin(path, data)
    per_doc = (
        read_doc_scores(path.parent / DOC_SCORES_FILE)
        if ident is not None
        else read_lm_eval_samples(path)
    )
    for corpus, tasks in sorted(tasks_by_corpus.items()):
        missing = sorted({"verbmem_f", "knowmem_f", "knowmem_r", "privleak"} - tasks)
        if missing:
            warnings.append(f"{path}: no {', '.join(missing)} results for {corpus} (shown as n/a)")
        first_task = f"muse_{corpus}_{min(tasks)}"
        metadata = (data["configs"].get(first_task) or {}).get("metadata") or {}
        rows.append(
            ResultRow(
                label=label,
                role=role,
                method=method,
                mode=mode,
                corpus=corpus,
                precision=precision,
                verbmem_f=_score(path, results, f"muse_{corpus}_verbmem_f", "verbmem_f"),
                knowmem_f=_score(path, results, f"muse_{corpus}_knowmem_f", "knowmem_f"),
                knowmem_r=_score(path, results, f"muse_{corpus}_knowmem_r", "knowmem_r"),
                aucs=_aucs(path, results, f"muse_{corpus}_privleak"),
                data=metadata.get("muse_data"),
                source=source,
                date=data.get("date") if isinstance(data.get("date"), int | float) else None,
                seed=seed,
                doc_scores=_corpus_doc_scores(per_doc, corpus),
                gguf=gguf,
            )
        )
    return rows, warnings


def _corpus_doc_scores(
    per_doc: Mapping[str, TaskScores] | None, corpus: str
) -> dict[str, TaskScores] | None:
    """A corpus's per-document scores by task (``verbmem_f``, ..., ``privleak``)."""
    if per_doc is None:
        return None
    prefix = f"muse_{corpus}_"
    return {t.removeprefix(prefix): v for t, v in per_doc.items() if t.startswith(prefix)}
