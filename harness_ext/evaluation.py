"""The MUSE tasks' logic, called by the thin ``tasks/muse/utils.py``: documents, scores, aggregates.

One document schema for every task: ``prompt`` (what the model sees), ``target`` (what it is
scored against), ``muse_task``, ``index`` and ``source`` (which record of which file), plus the
task's own fields. Per-document scores land in lm-eval's samples file, so every aggregate can be
recomputed from it: VerbMem/KnowMem log ROUGE-L F1 x 100 per document; PrivLeak logs, for every
attack, ``{"set": "forget"|"holdout", "score": s}`` and aggregates them to AUCs.

Options reach the tasks through lm-eval's task metadata (``--metadata key=value``, which lm-eval
merges with ``--model_args``): ``muse_data`` (local folder), ``privleak_k`` and
``privleak_auc_retrain``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from harness_ext.errors import MuseQuantError
from harness_ext.lm_eval_notes import drop_documented_metadata_note
from harness_ext.metrics.auc import PUBLISHED_RETRAIN_AUC, auc_forget_holdout, privleak
from harness_ext.metrics.knowmem import cut_answer, knowmem_prompt
from harness_ext.metrics.mia import ATTACKS, DEFAULT_ATTACK, MINK_RATIOS, all_mia_scores
from harness_ext.metrics.rouge import rouge_l_f1
from harness_ext.muse_data import check_corpus, load_split
from harness_ext.token_requests import TOKEN_STATS_FIELD

log = logging.getLogger(__name__)
# lm-eval loads this module (through the tasks' YAML) before it reads any of their documents.
drop_documented_metadata_note()

#: VerbMem's reference is cut to this many tokens of the evaluated model's tokenizer.
VERBMEM_REFERENCE_TOKENS = 128

#: The user options the tasks read from lm-eval's metadata; other ``muse_``/``privleak_`` keys
#: are typos and rejected.
OPTIONS = ("muse_data", "privleak_k", "privleak_auc_retrain")

#: Keys our own YAML passes as ``dataset_kwargs``.
_YAML_KEYS = ("muse_corpus", "muse_task")

#: muse_task -> (config, split of the scored records, split of the in-context examples or None).
TASK_SPLITS: dict[str, tuple[str, str, str | None]] = {
    "verbmem_f": ("verbmem", "forget", None),
    "knowmem_f": ("knowmem", "forget_qa", "forget_qa_icl"),
    "knowmem_r": ("knowmem", "retain_qa", "retain_qa_icl"),
}
PRIVLEAK_SETS = ("forget", "holdout")


def muse_dataset(**kwargs: Any) -> Any:
    """lm-eval ``custom_dataset`` entry: the task's documents as a one-split ``DatasetDict``.

    lm-eval calls it with the task metadata (model args, ``--metadata``) and our YAML's
    ``dataset_kwargs`` (``muse_corpus``, ``muse_task``), all as keywords.
    """
    from datasets import Dataset, DatasetDict  # datasets (pyarrow) takes ~1 s to import

    corpus, task = kwargs.get("muse_corpus"), kwargs.get("muse_task")
    check_corpus(str(corpus))
    _check_options(kwargs)
    data = kwargs.get("muse_data")
    data = None if data in (None, "") else str(data)
    if task == "privleak":
        docs = _privleak_docs(str(corpus), data, kwargs)
    elif task in TASK_SPLITS:
        docs = _generation_docs(str(corpus), str(task), data, kwargs)
    else:
        raise MuseQuantError(
            f"unknown muse_task {task!r} in the task YAML; "
            f"known: privleak, {', '.join(TASK_SPLITS)}"
        )
    return DatasetDict({"test": Dataset.from_list(docs)})


def required_splits(muse_task: str) -> list[tuple[str, str]]:
    """The (config, split) pairs a task reads, so a command can check a folder before any model
    is loaded."""
    if muse_task == "privleak":
        return [("privleak", name) for name in PRIVLEAK_SETS]
    config, split, icl_split = TASK_SPLITS[muse_task]
    return [(config, s) for s in (split, icl_split) if s is not None]


def _check_options(kwargs: Mapping[str, Any]) -> None:
    unknown = [
        k
        for k in kwargs
        if k.startswith(("muse_", "privleak_")) and k not in OPTIONS and k not in _YAML_KEYS
    ]
    if unknown:
        raise MuseQuantError(
            f"unknown MUSE option(s) {', '.join(sorted(unknown))}; known: {', '.join(OPTIONS)}"
        )


def _generation_docs(
    corpus: str, task: str, data: str | None, meta: Mapping[str, Any]
) -> list[dict[str, Any]]:
    config, split, icl_split = TASK_SPLITS[task]
    records, source = load_split(corpus, config, split, data)
    if icl_split is None:  # VerbMem: prompt -> gt, gt cut to the model's first 128 tokens
        tokenizer = reference_tokenizer(meta)
        return [
            {
                "prompt": r["prompt"],
                "target": truncate_reference(tokenizer, r["gt"]),
                "gt": r["gt"],
                "muse_task": task,
                "index": i,
                "source": source,
            }
            for i, r in enumerate(records)
        ]
    icl, _ = load_split(corpus, config, icl_split, data)
    return [
        {
            "prompt": knowmem_prompt(icl, r["question"]),
            "target": r["answer"],
            "question": r["question"],
            "muse_task": task,
            "index": i,
            "source": source,
        }
        for i, r in enumerate(records)
    ]


def _privleak_docs(corpus: str, data: str | None, meta: Mapping[str, Any]) -> list[dict[str, Any]]:
    attack, auc_retrain = privleak_options(corpus, meta)
    if data is not None and meta.get("privleak_auc_retrain") is None:
        log.warning(
            "PrivLeak on local data is normalized by MUSE's published Llama-2-7B AUC_retrain "
            "(%s); pass --metadata privleak_auc_retrain=<your retrain model's AUC> for your data",
            auc_retrain,
        )
    per_set = {}
    for name in PRIVLEAK_SETS:
        records, source = load_split(corpus, "privleak", name, data)
        per_set[name] = [
            {
                "prompt": "",
                "target": r["text"],
                "muse_task": "privleak",
                "set": name,
                "index": i,
                "source": source,
                "privleak_attack": attack,
                "auc_retrain": auc_retrain,
                TOKEN_STATS_FIELD: True,
            }
            for i, r in enumerate(records)
        ]
    # Interleaved, so that the first 2N documents are N of each set (see privleak_documents).
    forget, holdout = per_set["forget"], per_set["holdout"]
    docs = [d for pair in zip(forget, holdout, strict=False) for d in pair]
    n = min(len(forget), len(holdout))
    return docs + forget[n:] + holdout[n:]


def privleak_documents(limit: int | None) -> int | None:
    """How many PrivLeak documents ``--limit N`` takes: N forget and N holdout texts."""
    return None if limit is None else 2 * int(limit)


def privleak_options(corpus: str, meta: Mapping[str, Any]) -> tuple[str, float]:
    """The headline attack (``mink_<k>``) and the AUC_retrain PrivLeak is normalized by.

    MUSE's published AUC_retrain constants are Min-40% numbers, so another ``k`` needs the user's
    own ``privleak_auc_retrain``.
    """
    allowed = ", ".join(str(round(r * 100)) for r in MINK_RATIOS)
    raw_k = meta.get("privleak_k", DEFAULT_ATTACK.removeprefix("mink_"))
    try:
        k = int(str(raw_k))
    except ValueError:
        raise MuseQuantError(
            f"privleak_k={raw_k}: not an integer percent; use one of {allowed}"
        ) from None
    attack = f"mink_{k}"
    if attack not in ATTACKS:
        raise MuseQuantError(f"privleak_k={k}: no Min-{k}% attack; use one of {allowed}")
    raw_auc = meta.get("privleak_auc_retrain")
    if raw_auc is None:
        if attack != DEFAULT_ATTACK:
            raise MuseQuantError(
                f"privleak_k={k}: MUSE's published AUC_retrain is for Min-40%; also pass "
                f"privleak_auc_retrain=<your retrain model's Min-{k}% AUC>"
            )
        return attack, PUBLISHED_RETRAIN_AUC[corpus]
    try:
        auc = float(raw_auc)
    except ValueError:
        raise MuseQuantError(f"privleak_auc_retrain={raw_auc}: not a number in (0, 1]") from None
    if not 0.0 < auc <= 1.0:
        raise MuseQuantError(f"privleak_auc_retrain={raw_auc}: must be in (0, 1]")
    return attack, auc


def reference_tokenizer(meta: Mapping[str, Any]) -> Any:
    """The evaluated model's tokenizer, as lm-eval's HF model loads it from the model args.

    VerbMem's reference truncation must use the model's own tokenizer; lm-eval builds tasks
    without access to the model, but passes the model args along as task metadata.
    """
    name = meta.get("tokenizer") or meta.get("pretrained")
    if not isinstance(name, str) or not name:
        raise MuseQuantError(
            "VerbMem cuts references to 128 tokens of the evaluated model's tokenizer, but no "
            "tokenizer is known: pass --model_args pretrained=<path> (or --metadata tokenizer=...)"
        )
    if name.lower().endswith(".gguf"):  # muse-quant eval and sweep pass the folder made of it
        raise MuseQuantError(
            f"VerbMem cuts references with the evaluated model's tokenizer, and pretrained={name} "
            "is a GGUF file: run it with muse-quant eval or sweep (they pass the tokenizer the "
            "muse model reads from it), or pass --metadata tokenizer=FOLDER"
        )
    add_bos = meta.get("add_bos_token")
    return _load_tokenizer(
        name,
        str(meta.get("revision") or "main"),
        str(meta.get("subfolder") or ""),
        bool(meta.get("trust_remote_code", False)),
        bool(meta.get("use_fast_tokenizer", True)),
        None if add_bos is None else bool(add_bos),
    )


@lru_cache(maxsize=4)
def _load_tokenizer(
    name: str,
    revision: str,
    subfolder: str,
    trust_remote_code: bool,
    use_fast: bool,
    add_bos_token: bool | None,
) -> Any:
    from transformers import AutoTokenizer  # the ground imports no model library at load

    kwargs: dict[str, Any] = {"revision": revision, "trust_remote_code": trust_remote_code}
    kwargs["use_fast"] = use_fast
    if subfolder:
        kwargs["subfolder"] = subfolder
    if add_bos_token is not None:
        kwargs["add_bos_token"] = add_bos_token
    try:
        return AutoTokenizer.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as e:
        raise MuseQuantError(f"tokenizer {name}: cannot load it ({str(e).splitlines()[0]})") from e


def truncate_reference(
    tokenizer: Any, text: str, max_tokens: int = VERBMEM_REFERENCE_TOKENS
) -> str:
    """MUSE's VerbMem reference: the first ``max_tokens`` tokens (special tokens included)."""
    ids = tokenizer(text, add_special_tokens=True)["input_ids"][:max_tokens]
    return tokenizer.decode(ids, skip_special_tokens=True)


def score_generation(doc: Mapping[str, Any], results: Sequence[str]) -> dict[str, float]:
    """VerbMem/KnowMem per document: ROUGE-L F1 x 100 (KnowMem answers cut first)."""
    output = results[0]
    if doc["muse_task"] != "verbmem_f":
        output = cut_answer(output)
    return {doc["muse_task"]: 100.0 * rouge_l_f1(doc["target"], output)}


def score_privleak(doc: Mapping[str, Any], results: Sequence[Any]) -> dict[str, dict]:
    """Every attack's score for one text, tagged with its set, for the AUC aggregations."""
    stats = getattr(results[0], "stats", None)
    if stats is None:
        raise MuseQuantError(
            f"PrivLeak ({doc['source']}) needs per-token log-probs, which only the muse model "
            "returns; rerun with --model muse (stock --model hf gives one sum per text)"
        )
    scores = all_mia_scores(stats)
    out: dict[str, dict] = {
        f"auc_{name}": {"set": doc["set"], "score": s} for name, s in scores.items()
    }
    out["privleak"] = {
        "set": doc["set"],
        "score": scores[doc["privleak_attack"]],
        "auc_retrain": doc["auc_retrain"],
    }
    return out


def aggregate_auc(items: Sequence[Mapping[str, Any]]) -> float:
    """MUSE's forget-vs-holdout AUC over all texts of the run (one corpus-level number)."""
    sets: dict[str, list[float]] = {name: [] for name in PRIVLEAK_SETS}
    for item in items:
        sets[item["set"]].append(item["score"])
    return auc_forget_holdout(sets["forget"], sets["holdout"])


def aggregate_privleak(items: Sequence[Mapping[str, Any]]) -> float:
    """PrivLeak = (AUC_model - AUC_retrain) / AUC_retrain x 100 with the headline attack."""
    retrain = {item["auc_retrain"] for item in items}
    if len(retrain) != 1:
        raise MuseQuantError(f"PrivLeak: documents disagree on AUC_retrain ({sorted(retrain)})")
    return privleak(aggregate_auc(items), retrain.pop())
