"""One unlearning run: load the target, train with the method's Trainer, save, and record.

The output folder holds either a full checkpoint (``--mode full``: safetensors in the trained
dtype, plus the tokenizer) or a peft adapter (``--mode lora``), and ``unlearn.json``: the config,
seeds, hashes of the target and the data, library versions, the loss terms, early-stopping checks,
and the fraction of 4-bit codes the update changed relative to the target.
"""

from __future__ import annotations

import contextlib
import copy
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, TrainingArguments

from harness_ext.errors import MuseQuantError, first_line
from harness_ext.files import file_hashes, staged_dir
from harness_ext.versions import library_versions
from model_wrappers.codes import changed_codes
from model_wrappers.precisions import quantized_linear_names
from model_wrappers.progress import library_bars_on_terminal_only
from muse_quant.unlearning.callbacks import ForgetCheck, LossProgress
from muse_quant.unlearning.config import UnlearnConfig
from muse_quant.unlearning.data import (
    ForgetRetainCollator,
    data_hash,
    forget_qa,
    load_forget_retain,
    verbatim_pairs,
)
from muse_quant.unlearning.inputs import KIND, RECORD, check_inputs, written_files
from muse_quant.unlearning.lora import adapter_off, with_lora
from muse_quant.unlearning.quant_aware import through_nf4
from muse_quant.unlearning.saliency import select_and_freeze
from muse_quant.unlearning.trainers import TRAINERS

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def unlearn(
    target: str | Path,
    data: str | Path,
    config: UnlearnConfig,
    out: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Unlearn ``data``'s forget set from ``target``; return ``out`` (written all at once).
    Bad inputs are refused before any work (:func:`.inputs.check_inputs`)."""
    out, data = Path(out), Path(data)
    check_inputs(str(target), data, out, config, overwrite)
    with library_bars_on_terminal_only():  # transformers' load and save bars, off a terminal
        return _unlearn(str(target), data, config, out, progress)


def _unlearn(target: str, data: Path, config: UnlearnConfig, out: Path, progress: bool) -> Path:
    started = time.time()
    tokenizer = _tokenizer(str(target))
    dataset = load_forget_retain(
        data, tokenizer, config.retain_splits, config.max_length, config.seed
    )
    model = _load(str(target), DTYPES[config.param_dtype])
    with tempfile.TemporaryDirectory(prefix="muse-quant-unlearn-") as scratch:  # Trainer's own
        trainer, checks = _trainer(model, tokenizer, dataset, data, config, progress, scratch)
        salient = _select_salient(trainer, dataset, tokenizer, config)  # on the target as stored
        with _computing_through(trainer.model, config):
            trainer.train()
    trained = trainer.model
    record = {
        "kind": KIND,
        "method": config.name,
        "config": config.to_dict(),
        "target": _target_record(str(target)),
        "data": {"path": str(data), "sha256": data_hash(data, ("forget", *config.retain_splits))},
        "steps": trainer.state.global_step,
        "stopped_early": bool(checks and checks.stopped),
        "forget_checks": checks.checks if checks else [],
        "loss_terms": {"first": trainer.term_history[0], "last": trainer.term_history[-1]},
        "salient_modules": salient,
        "changed_codes": _changed_codes(str(target), trained),
        "seconds": round(time.time() - started, 1),
        "versions": library_versions(),
    }
    with staged_dir(out) as tmp:
        trained.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        record["files"] = written_files(tmp)  # what --overwrite may replace
        (tmp / RECORD).write_text(json.dumps(record, indent=1) + "\n")
    return out


def _tokenizer(target: str) -> Any:
    try:
        return AutoTokenizer.from_pretrained(target)
    except (OSError, ValueError) as e:
        raise MuseQuantError(
            f"--model {target}: cannot load its tokenizer ({first_line(e)})"
        ) from e


def _load(target: str, dtype: torch.dtype) -> torch.nn.Module:
    try:
        return AutoModelForCausalLM.from_pretrained(target, dtype=dtype, use_safetensors=True)
    except (OSError, ValueError) as e:
        raise MuseQuantError(
            f"--model {target}: cannot load a safetensors causal LM ({first_line(e)})"
        ) from e


def _computing_through(
    model: torch.nn.Module, config: UnlearnConfig
) -> contextlib.AbstractContextManager[None]:
    """Quantization-aware runs compute (training steps and early-stopping checks alike) through
    the block linears' NF4-rounded weights."""
    if config.quant_aware is None:
        return contextlib.nullcontext()
    return through_nf4(model, quantized_linear_names(model))


def _select_salient(
    trainer: Any, dataset: Any, tokenizer: Any, config: UnlearnConfig
) -> dict[str, Any] | None:
    """SURE: freeze all but the most forget-salient block linears, saliency measured on the
    whole forget set with the method's own forget loss (None when the run trains everything)."""
    if config.salient_fraction is None:
        return None
    collate = ForgetRetainCollator(tokenizer.pad_token_id)
    device = trainer.args.device
    batches = (
        {k: v.to(device) for k, v in collate([dataset[i] for i in chunk])["forget"].items()}
        for chunk in _chunks(range(len(dataset)), config.batch_size)
    )
    model = trainer.model
    names = quantized_linear_names(model)
    return select_and_freeze(model, names, config.salient_fraction, trainer.forget_loss, batches)


def _chunks(items: range, size: int) -> list[range]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _trainer(
    model: torch.nn.Module,
    tokenizer: Any,
    dataset: Any,
    data: Path,
    config: UnlearnConfig,
    progress: bool,
    scratch: str,
) -> tuple[Any, Any]:
    """The method's Trainer, with the progress bar and early-stopping callbacks attached."""
    needs_reference = config.method == "npo" or config.retain_loss == "klr"
    if config.mode == "lora":
        model = with_lora(model, config)
        reference = lambda: adapter_off(model)  # noqa: E731
    elif needs_reference:
        frozen = copy.deepcopy(model).eval().requires_grad_(False)
        reference = lambda: contextlib.nullcontext(frozen)  # noqa: E731
    else:
        reference = None
    args = TrainingArguments(
        output_dir=scratch,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        seed=config.seed,
        data_seed=config.seed,
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
    )
    kwargs: dict[str, Any] = {"beta": config.beta} if config.method == "npo" else {}
    trainer = TRAINERS[config.method](
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=ForgetRetainCollator(tokenizer.pad_token_id),
        retain_loss=config.retain_loss,
        retain_weight=config.retain_weight,
        reference=reference,
        **kwargs,
    )
    trainer.remove_callback(PrinterCallback)
    if progress:
        trainer.add_callback(LossProgress(trainer.term_history, config.max_steps, config.name))
    checks = None
    pairs = verbatim_pairs(data)
    if config.check_every and pairs:
        checks = ForgetCheck(
            tokenizer,
            pairs,
            forget_qa(data),
            config.check_every,
            config.stop_verbmem,
            config.stop_knowmem,
        )
        trainer.add_callback(checks)
    return trainer, checks


def _target_record(target: str) -> dict[str, Any]:
    folder = Path(target)
    if not folder.is_dir():
        return {"path": target}
    return {
        "path": str(folder.resolve()),
        "sha256": file_hashes(folder, sorted(folder.glob("*.safetensors"))),
    }


def block_weights(
    model: torch.nn.Module, names: list[str], base: dict[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """float32 copies of the named linears' weights. A LoRA layer's adapter is merged into
    ``base`` (the target as stored), as a deployment merges it."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    weights = {}
    for name in names:
        module = inner.get_submodule(name)
        if hasattr(module, "get_delta_weight") and base is not None:
            weights[name] = base[name] + module.get_delta_weight("default").detach().float()
        else:
            weights[name] = module.weight.detach().float().clone()
    return weights


def _changed_codes(target: str, trained: torch.nn.Module) -> dict:
    reference = _load(target, torch.float32)
    names = quantized_linear_names(reference)
    before = block_weights(reference, names)
    return code_change_record(before, block_weights(trained, names, base=before))


def code_change_record(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> dict:
    """``unlearn.json``'s ``changed_codes``: per scheme, overall and per layer (6 decimals)."""
    report = changed_codes(before, after)
    return {
        scheme: {
            "overall": round(v["overall"], 6),
            "per_layer": {k: round(x, 6) for k, x in v["per_layer"].items()},
        }
        for scheme, v in report.items()
    }
