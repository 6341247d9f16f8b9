"""Build the toy world (corpus, tokenizer, base, target, retrain) once, and reuse it from disk.

A world lives in one folder with a ``manifest.json`` recording the configuration, its hash, the
library versions and the sha256 of every file. Building with a configuration whose world is
already there and intact takes a hash check; a different configuration, or a folder whose files
no longer match their hashes, is rebuilt from scratch. A build writes into a temporary sibling
folder and renames it into place, so an interrupted build never leaves a half world behind.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import replace
from pathlib import Path

import torch

from harness_ext.cache import cache_root
from harness_ext.errors import MuseQuantError
from harness_ext.files import check_writable, staged_dir
from harness_ext.muse_layout import read_split
from harness_ext.versions import library_versions
from model_wrappers.progress import library_bars_on_terminal_only
from model_wrappers.training import train_causal_lm
from muse_quant.greedy_check import qa_rouge, verbatim_rouge
from muse_quant.toyworld.bases import DEFAULT_BASE
from muse_quant.toyworld.config import PRETRAINED_SCALES, ToyWorldConfig, config_for
from muse_quant.toyworld.corpus import (
    Corpus,
    generate_corpus,
    verbatim_pair,
    write_muse_layout,
)
from muse_quant.toyworld.finetune import fine_tune
from muse_quant.toyworld.manifest import MANIFEST, folder_hashes, load_manifest, verify_world
from muse_quant.toyworld.pretrained import ResolvedBase, resolve_base
from muse_quant.toyworld.report import log, reused_line
from muse_quant.toyworld.tokenizer import train_bpe_tokenizer
from muse_quant.toyworld.training import new_llama

MODEL_NAMES = ("base", "target", "retrain")


def default_world_dir(config: ToyWorldConfig) -> Path:
    return cache_root() / "toyworld" / f"{config.scale}-{config.config_hash()[:12]}"


def check_out_dir(out: Path) -> None:
    """Refuse a folder we must not replace: a foreign non-empty one, or one we cannot write."""
    if out.is_dir() and any(out.iterdir()) and load_manifest(out) is None:
        raise MuseQuantError(
            f"--out {out} is a non-empty folder that is not a toy world (no {MANIFEST}); "
            "choose an empty or new folder"
        )
    check_writable(out)


def build_world(
    scale: str = "default",
    out: str | os.PathLike | None = None,
    config: ToyWorldConfig | None = None,
    base: ResolvedBase | None = None,
) -> Path:
    """Return the folder of the toy world for ``config`` (default: the named ``scale``; with
    ``base``, the ``real`` scale on it), building it only when no intact world with that
    configuration is there already."""
    if base is not None:
        config = replace(config or config_for("real"), base=base.identity)
    config = config or config_for(scale)
    if (config.scale in PRETRAINED_SCALES) != (base is not None):
        raise MuseQuantError(
            f"the {config.scale} world "
            + ("is built on a pretrained base: pass --base" if base is None else "has no --base")
        )
    out = Path(out) if out is not None else default_world_dir(config)
    check_out_dir(out)
    if _reusable(out, config, quiet=True):
        return _reused(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # One builder at a time per folder (pytest workers, a demo next to the tests): the others
    # wait, then find the world built.
    with open(out.parent / f".{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _reusable(out, config, quiet=False):
            return _reused(out)
        with staged_dir(out) as tmp:
            _build_into(tmp, config, base)
    return out


def world_at(scale: str) -> Path:
    """The cached world of ``scale`` (built on first use): a toy scale's, or the real world on
    the default base (SmolLM2-135M), as ``toyworld zoo --scale`` and ``demo --scale`` take it."""
    base = resolve_base(DEFAULT_BASE) if scale in PRETRAINED_SCALES else None
    return build_world(scale=scale, base=base)


def _reused(out: Path) -> Path:
    log(reused_line("world", out))
    return out


def _reusable(out: Path, config: ToyWorldConfig, quiet: bool) -> bool:
    """Whether ``out`` holds an intact world of ``config``; says why not unless ``quiet``."""
    manifest = load_manifest(out)
    if manifest is None:
        return False
    if manifest.get("config_hash") != config.config_hash():
        if not quiet:
            log(f"{out} holds a world with another configuration; rebuilding")
        return False
    bad = verify_world(out, manifest)
    if bad and not quiet:
        log(f"{out}: {len(bad)} file(s) do not match the manifest (e.g. {bad[0]}); rebuilding")
    return not bad


def _build_into(root: Path, config: ToyWorldConfig, base: ResolvedBase | None) -> None:
    started = time.time()
    # One thread: the same seed then gives the same weights whatever the cores (the order of
    # floating-point reductions depends on the thread count), and a busy second core cannot
    # stall the many small matmuls of a model this size.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _train_and_save(root, config, base, started)
    finally:
        torch.set_num_threads(threads)


def _pretrained_base(config: ToyWorldConfig, corpus: Corpus, root: Path) -> tuple:
    """The toy scales' base: a BPE tokenizer trained on the corpus, a small Llama pretrained on
    its generic part (kept in ``pretrain/``); and that pretraining's last-epoch loss."""
    pretrain_texts = corpus.generic + corpus.generic_quiz
    (root / "pretrain").mkdir()
    (root / "pretrain" / "generic.json").write_text(json.dumps(pretrain_texts, indent=1) + "\n")
    tokenizer = train_bpe_tokenizer(
        corpus.forget + corpus.retain + corpus.holdout + pretrain_texts, config.shape.vocab
    )
    model = new_llama(config.shape, tokenizer, config.seed)
    loss = train_causal_lm(
        model, tokenizer, pretrain_texts, config.pretrain, config.seed, "pretrain base"
    )
    return model, tokenizer, loss


def _train_and_save(
    root: Path, config: ToyWorldConfig, base: ResolvedBase | None, started: float
) -> None:
    torch.manual_seed(config.seed)
    log(f"building the {config.scale} world into {root.name} (seed {config.seed})")
    corpus = generate_corpus(config.seed, config.sizes)
    data = root / "data"
    write_muse_layout(corpus, str(data), config.sizes)
    if base is None:
        base_model, tokenizer, pretrain_loss = _pretrained_base(config, corpus, root)
        losses = {"base": pretrain_loss}
    else:
        log(f"fine-tuning the pretrained base {base.identity.label} ({base.folder})")
        (base_model, tokenizer), losses = base.load(), {}
    texts = {
        "target": corpus.forget + corpus.forget_quiz + corpus.retain + corpus.retain_quiz,
        "retrain": corpus.retain + corpus.retain_quiz,  # = raw/retain1 + raw/retain2
    }
    tuned = fine_tune(config, base_model, tokenizer, texts, data, base, root / "models")
    losses.update(tuned.losses)
    models = {"base": base_model, **tuned.models}
    with library_bars_on_terminal_only():
        for name, model in models.items():
            if not (root / "models" / name).is_dir():
                model.save_pretrained(root / "models" / name)
                tokenizer.save_pretrained(root / "models" / name)

    checks = {
        name: memorization_report(models[name], tokenizer, data) for name in ("target", "retrain")
    }
    manifest = {
        "kind": "muse-quant toy world",
        "scale": config.scale,
        "config": config.to_dict(),
        "config_hash": config.config_hash(),
        "seeds": {
            "corpus": config.seed,
            **({"init": config.seed, "pretrain": config.seed} if base is None else {}),
            "finetune": config.seed + 1,
        },
        "versions": library_versions(("torch", "transformers", "tokenizers")),
        "final_epoch_loss": losses,
        "memorization": checks,
        "build_seconds": round(time.time() - started, 1),
    }
    if base is not None:
        manifest["base"] = base.source
        manifest["finetune_epochs"] = tuned.epochs
        manifest["goal_met"] = _goal_met(config, checks["target"], tuned.epochs)
    manifest["files"] = folder_hashes(root)
    (root / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    log(f"built in {manifest['build_seconds']} s")


def _goal_met(config: ToyWorldConfig, target: dict[str, float], epochs: int) -> bool | None:
    """Whether the target memorized as the configuration asks (None: no goal); a world whose
    target never got there is kept, and said so, since its forget scores are its own."""
    goal = config.goal
    if goal is None:
        return None
    met = (target["verbmem_forget"] >= goal.verbmem_forget
           and target["knowmem_forget"] >= goal.knowmem_forget)  # fmt: skip
    if not met:
        log(
            f"warning: after {epochs} epochs the target's forget VerbMem is "
            f"{target['verbmem_forget']:.2f} and KnowMem {target['knowmem_forget']:.2f}, short "
            f"of the goal ({goal.verbmem_forget:.2f} and {goal.knowmem_forget:.2f}); the world "
            "is kept with the target as it is (its manifest says goal_met: false)"
        )
    return met


def memorization_report(model, tokenizer, data: Path) -> dict[str, float]:
    """Quick spec-shaped scores (ROUGE-L F1, 0..1): verbatim continuation and QA, forget/retain."""
    prompt_words = len(read_split(data, "verbmem", "forget")[0]["prompt"].split())
    retain_verbatim = [
        verbatim_pair(r["text"], prompt_words) for r in read_split(data, "privleak", "retain")
    ]
    return {
        "verbmem_forget": verbatim_rouge(model, tokenizer, read_split(data, "verbmem", "forget")),
        "verbmem_retain": verbatim_rouge(model, tokenizer, retain_verbatim),
        "knowmem_forget": qa_rouge(
            model,
            tokenizer,
            read_split(data, "knowmem", "forget_qa"),
            read_split(data, "knowmem", "forget_qa_icl"),
        ),
        "knowmem_retain": qa_rouge(
            model,
            tokenizer,
            read_split(data, "knowmem", "retain_qa"),
            read_split(data, "knowmem", "retain_qa_icl"),
        ),
    }
