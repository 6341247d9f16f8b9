"""GGUF files as checkpoints: ``pretrained=`` naming a ``.gguf`` file (or a folder holding one
and no ``config.json``), the form in which third parties ship unlearned models.

The file is read by the gguf package's reader (a truncated or corrupt file is a one-line error),
hashed and described: its ``general.file_type`` and how many tensors of each ggml type it holds.
Then one of two things, decided once when the checkpoint is opened:

- ``gguf-shipped``: llama.cpp evaluates the file itself (``shipped_file``, through the gguf
  precisions' llama.cpp runtime). The runtime tokenizes with a Hugging Face tokenizer and reads
  the context length from a config, so a folder holding those two, made from the file's
  metadata, is cached (no weights: nothing is dequantized);
- every other precision: the file's tensors, dequantized to float32 by transformers
  (``from_pretrained(folder, gguf_file=NAME, quantization_config=GgufConfig(dequantize=True))``,
  whose model is then an ordinary dense one that ``save_pretrained`` accepts), are saved with the
  tokenizer as a Hugging Face checkpoint folder, cached by the file's sha256, the transformers
  and gguf versions and :data:`HF_FOLDER_VERSION`; that folder is opened as an ordinary
  :class:`~model_wrappers.checkpoints.Checkpoint`, so every backend, adapters, deployments and
  ``reusing_checkpoints`` work on it unchanged. Its fp32 is the dequantized file.

Either way the checkpoint carries a :class:`GgufSource`, which the provenance records as its
``gguf_source`` block.
"""

from __future__ import annotations

import importlib.metadata
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GgufConfig

from harness_ext.errors import MuseQuantError, first_line
from harness_ext.files import sha256_file
from harness_ext.precision_names import SHIPPED_GGUF, gguf_file_type_bits
from model_wrappers.checkpoints import Checkpoint
from model_wrappers.precisions.base import Source
from model_wrappers.precisions.cached import cached_checkpoint
from model_wrappers.precisions.ggml import import_gguf, llama_cpp_build
from model_wrappers.precisions.gguf_writer import tensor_record

#: Bumped whenever the Hugging Face folder made of a GGUF file changes (part of its cache key).
HF_FOLDER_VERSION = 1
#: Written into that folder: how its tokenizer was made and how long the folder took.
RECORD_FILE = "muse_quant_gguf.json"
@dataclass(frozen=True)
class GgufFile:
    """A GGUF file, read and hashed: what a results file says the model was."""

    path: Path
    sha256: str
    architecture: str | None
    #: ``general.file_type`` as the gguf package names it (``MOSTLY_Q8_0``), None if unsaid.
    file_type: str | None
    tensor_types: dict[str, int]
    tensor_bytes: int

    @classmethod
    def open(cls, label: str, path: Path) -> GgufFile:
        """The file at ``path``, or a one-line error when the gguf reader cannot read it
        whole (truncated, corrupt, not a GGUF file)."""
        gguf, _ = import_gguf()
        try:
            reader = gguf.GGUFReader(str(path))
        except Exception as e:  # the reader raises ValueError, IndexError, struct.error, ...
            raise MuseQuantError(
                f"pretrained={label}: {path} is not a readable GGUF file ({first_line(e)}); a "
                "truncated download? fetch it again"
            ) from None
        architecture = _field(reader, "general.architecture")
        file_type = _field(reader, "general.file_type")
        if file_type is not None:
            known = {int(t): t.name for t in gguf.LlamaFileType}
            file_type = known.get(int(file_type), f"unknown ({file_type})")
        return cls(path, sha256_file(path), architecture, file_type, **tensor_record(reader))

    @property
    def gguf_type(self) -> str:
        """llama.cpp's name of the file's type, as the ``gguf-*`` precisions spell it (``q8_0``
        of ``MOSTLY_Q8_0``, ``f32`` of ``ALL_F32``)."""
        if self.file_type is None:
            return "unknown"
        return self.file_type.removeprefix("MOSTLY_").removeprefix("ALL_").lower()


def _field(reader: Any, key: str) -> Any:
    """A scalar or string metadata field of a GGUF file, None when it has none."""
    field = reader.fields.get(key)
    return None if field is None else field.contents()


@dataclass(frozen=True)
class GgufSource:
    """The GGUF file a checkpoint was opened from, whether it is evaluated as shipped, and the
    Hugging Face folder made from it (its cache entry and how its tokenizer was made)."""

    file: GgufFile
    shipped: bool
    hf_folder: dict[str, Any]

    def describe(self) -> dict[str, Any]:
        """The provenance's ``gguf_source`` block."""
        file = self.file
        if self.shipped:
            note = "the shipped file itself, on llama.cpp's kernels"
        else:
            note = (
                f"the file's tensors dequantized to float32 by transformers "
                f"{self.hf_folder['transformers']} (GgufConfig(dequantize=True)) and saved as a "
                "Hugging Face checkpoint: the full-precision reference of this model is that "
                "dequantized file, and every precision is built from it"
            )
        return {
            "file": str(file.path),
            "sha256": file.sha256,
            "architecture": file.architecture,
            "file_type": file.file_type,
            "bits": gguf_file_type_bits(file.file_type) if file.file_type else None,
            "tensor_types": dict(file.tensor_types),
            "tensor_bytes": file.tensor_bytes,
            "shipped": self.shipped,
            "note": note,
            "hf_folder": dict(self.hf_folder),
        }


def gguf_checkpoint(
    label: str,
    path: Path,
    *,
    shipped: bool,
    trust_remote_code: bool,
    device: str,
) -> Checkpoint:
    """The checkpoint of a GGUF file: for ``gguf-shipped`` its metadata folder (the file is
    what llama.cpp runs), else the folder of its dequantized weights (module docstring)."""
    file = GgufFile.open(label, path)
    folder, record = hf_folder(file, label, weights=not shipped)
    source = GgufSource(file, shipped, record)
    if shipped:
        files = {path.name: file.sha256}
        return Checkpoint(label, folder, files, False, trust_remote_code, device, gguf=source)
    opened = Checkpoint.open(str(folder), False, trust_remote_code, device)
    return replace(opened, label=label, gguf=source)


def hf_folder(file: GgufFile, label: str, weights: bool) -> tuple[Path, dict[str, Any]]:
    """The cached Hugging Face folder of ``file``: config and tokenizer, and with ``weights`` the
    float32 model transformers dequantizes from it; and what its cache entry says."""
    key = {
        "format": "gguf-hf-folder",
        "file_sha256": file.sha256,
        "weights": weights,
        "transformers": transformers.__version__,
        "gguf": importlib.metadata.version("gguf"),
        "writer": HF_FOLDER_VERSION,
    }
    where = {"pretrained_model_name_or_path": str(file.path.parent), "gguf_file": file.path.name}

    def write(folder: Path) -> None:
        start = time.perf_counter()
        try:
            tokenizer, how = _tokenizer(file, where)
            if weights:
                model = AutoModelForCausalLM.from_pretrained(
                    **where, dtype=torch.float32, quantization_config=GgufConfig(dequantize=True)
                )
                model.save_pretrained(folder)
                del model
            else:
                AutoConfig.from_pretrained(**where).save_pretrained(folder)
        except (ValueError, OSError, KeyError, RuntimeError, TypeError) as e:
            raise MuseQuantError(
                f"pretrained={label}: transformers {transformers.__version__} cannot read this "
                f"GGUF file ({first_line(e)})"
            ) from None
        tokenizer.save_pretrained(folder)
        record = {"tokenizer": how, "seconds": round(time.perf_counter() - start, 3)}
        (folder / RECORD_FILE).write_text(json.dumps(record, indent=1))

    folder, hit = cached_checkpoint(key, write)
    made = json.loads((folder / RECORD_FILE).read_text())
    return folder, {
        "folder": str(folder),
        "hit": hit,
        "weights": weights,
        "transformers": key["transformers"],
        "writer": HF_FOLDER_VERSION,
        **made,
    }


def _tokenizer(file: GgufFile, where: dict[str, str]) -> tuple[Any, str]:
    """The file's Hugging Face tokenizer and where it came from: the tokenizer.json the file
    carries under the GGUF spec's ``tokenizer.huggingface.json`` key (muse-quant's writer puts
    it there), with the special tokens transformers reads from the file, else transformers' own
    rebuild from ``tokenizer.ggml.*`` (whose pre-tokenizer is the split regex
    ``tokenizer.ggml.pre`` names: right for Llama-2's SentencePiece vocabulary and the
    pre-tokenizers it knows, wrong for a byte-level BPE with another split)."""
    gguf, _ = import_gguf()
    rebuilt = AutoTokenizer.from_pretrained(**where)
    own = _field(gguf.GGUFReader(str(file.path)), gguf.Keys.Tokenizer.HF_JSON)
    if own is None:
        return rebuilt, "transformers' rebuild from the file's tokenizer.ggml.* keys"
    from tokenizers import Tokenizer  # transformers' own dependency

    specials = {
        name: getattr(rebuilt, name)
        for name in ("bos_token", "eos_token", "unk_token", "pad_token")
        if getattr(rebuilt, name) is not None
    }
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(own), **specials
    )
    return tokenizer, f"the file's {gguf.Keys.Tokenizer.HF_JSON}"


def shipped_file(source: Source) -> tuple[Path, dict[str, Any]]:
    """The file ``gguf-shipped`` hands llama.cpp, and what it holds (the keys the ``gguf-*``
    precisions record: type, sha256, tensor types, llama.cpp build)."""
    origin: GgufSource | None = getattr(source, "gguf", None)
    if origin is None or not origin.shipped:  # open_checkpoint refuses this before
        raise MuseQuantError(
            f"precision {SHIPPED_GGUF} evaluates a GGUF file given as pretrained=, as shipped"
        )
    _, llama_cpp = import_gguf()
    file = origin.file
    return file.path, {
        "gguf_type": file.gguf_type,
        "file": str(file.path),
        "file_sha256": file.sha256,
        "tensor_types": dict(file.tensor_types),
        "tensor_bytes": file.tensor_bytes,
        "llama_cpp": llama_cpp_build(llama_cpp),
        "cache": None,
        "shipped": True,
    }
