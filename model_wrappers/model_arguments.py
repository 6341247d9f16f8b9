"""The ``muse`` model's arguments: their names and meanings, how they are typed and checked.

``--model_args`` arrive as ``key=value`` strings; :func:`parse_model_args` reads them as lm-eval's
command line does but refuses a key given twice. :func:`check_arguments` refuses a name nobody
reads (naming the closest known one), a bad true/false value, and sizes that are not positive
whole numbers; ``model_wrappers.request`` then decides what the arguments mean.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from typing import Any

from lm_eval._cli.utils import handle_cli_value_string, split_top_level
from lm_eval.models.huggingface import HFLM

from harness_ext.errors import MuseQuantError, did_you_mean
from model_wrappers.precisions import all_precision_options
from model_wrappers.precisions.base import parse_bool

#: What MUSE does with a text longer than the model's context: refuse it, or score its start.
CONTEXT_POLICIES = ("error", "truncate")

#: PrivLeak's scoring batches hold at most this many padded tokens: with a 32k vocabulary the
#: batch's logits are 8192 x 32000 x 4 bytes = 1 GB in float32 (0.5 GB in bf16), whatever the
#: batch size or text length.
MAX_BATCH_TOKENS = 8192

#: The muse model's own arguments, with their defaults.
OWN: dict[str, Any] = {
    "pretrained": None,
    "dtype": None,
    "adapter": None,
    "merge": True,
    "precision": None,
    "emulated": False,
    "allow_pickle": False,
    "allow_other_base": False,
    "calibration": None,
    "context_overflow": "error",
    "max_batch_tokens": MAX_BATCH_TOKENS,
    "prefix_cache": True,
}
#: What each of the muse model's own arguments means (``muse-quant eval --help``).
HELP = {
    "pretrained": "the checkpoint: a local folder (or hub id); required",
    "dtype": "float32 (default on CPU), bfloat16, float16 or auto; or give precision",
    "adapter": "a LoRA adapter folder (peft) on top of pretrained, checked against its base",
    "merge": "true (default): quantize base + adapter merged; false: adapter on the quantized base",
    "precision": "what the model is evaluated at (list below); default fp32 on CPU",
    "emulated": "true: the precision's own rounding in dense float32 layers (no kernels)",
    "allow_pickle": "true: also load pickled (.bin) weights; default safetensors only",
    "allow_other_base": "true: accept an adapter recorded for another base",
    "calibration": "GPTQ/AWQ calibration texts: a JSON file, a MUSE data folder, news or books",
    "context_overflow": "error (default): a text longer than the context is refused; truncate",
    "max_batch_tokens": f"padded tokens per PrivLeak scoring batch (default {MAX_BATCH_TOKENS})",
    "prefix_cache": "true (default): compute KnowMem's shared in-context prefix once per batch, "
    "and prefill each padded prompt alone (VerbMem)",
}
#: The true/false arguments (``merge=flase`` is an error, not True).
FLAGS = ("merge", "emulated", "allow_pickle", "allow_other_base", "prefix_cache")
#: lm-eval's own loading arguments: with any of them, lm-eval's loader runs instead of ours.
LM_EVAL_LOADING = (
    "peft", "delta", "gguf_file", "autogptq", "gptqmodel", "parallelize", "tp_plan",
    "revision", "subfolder", "quantization_config", "load_in_4bit", "load_in_8bit",
)  # fmt: skip
#: Arguments that must be a positive whole number when given.
POSITIVE_INTS = ("max_batch_size", "max_length", "max_gen_toks", "max_batch_tokens")


def parse_model_args(pieces: Iterable[str]) -> dict[str, Any]:
    """``key=value,key=value`` strings (one or several, as lm-eval's command line takes them)
    as a dict, split and converted as lm-eval's command line does; a piece without ``=`` or a
    key given twice is an error (lm-eval would let the last one win)."""
    out: dict[str, Any] = {}
    for piece in pieces:
        for item in split_top_level(str(piece)):
            if not item.strip():
                continue
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or not key:
                raise MuseQuantError(
                    f"--model_args: {item!r} is not key=value (e.g. pretrained=path/to/model)"
                )
            if key in out:
                raise MuseQuantError(
                    f"--model_args: {key}= is given twice ({out[key]} and {value}); give it once"
                )
            out[key] = handle_cli_value_string(value)
    return out


def flag(name: str, value: Any) -> bool:
    """A true/false model argument; anything else (``merge=flase``) is an error, not True."""
    try:
        return parse_bool(value)
    except ValueError:
        raise MuseQuantError(f"--model_args {name}={value}: expected true or false") from None


def known_arguments() -> set[str]:
    """Every argument name the muse model reads: its own, lm-eval's HFLM's, the precisions'."""
    names = {*OWN, *inspect.signature(HFLM.__init__).parameters} - {"self", "kwargs"}
    return names | all_precision_options() | set(LM_EVAL_LOADING)


def check_arguments(args: Mapping[str, Any]) -> None:
    """Refuse an argument nobody reads: HFLM passes unknown ones to ``from_pretrained`` or drops
    them, so ``precison=nf4`` would evaluate fp32 without a word."""
    known = known_arguments()
    unknown = sorted(k for k in args if k not in known)
    if unknown:
        raise MuseQuantError(
            f"--model_args: unknown argument {unknown[0]}{did_you_mean(unknown[0], known)}; "
            "the muse model takes lm-eval's hf arguments, adapter, merge, allow_other_base, "
            "precision and its options, emulated, allow_pickle, calibration, context_overflow, "
            "max_batch_tokens, prefix_cache (docs/precisions.md)"
        )


def check_numbers(args: Mapping[str, Any]) -> None:
    """``batch_size`` is a positive number, ``auto`` or ``auto:N``; the sizes are positive."""
    batch = args.get("batch_size")
    if batch is not None:
        text = str(batch).strip()
        count = text.removeprefix("auto:") if text.startswith("auto:") else text
        if text != "auto" and not _positive(count):
            raise MuseQuantError(
                f"--batch_size {batch}: a positive number of documents, auto or auto:N"
            )
    for name in POSITIVE_INTS:
        value = args.get(name)
        if value is not None and not _positive(value):
            raise MuseQuantError(f"--model_args {name}={value}: expected a positive whole number")


def _positive(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    try:
        return int(str(value)) >= 1 and float(str(value)) == int(str(value))
    except ValueError:
        return False
