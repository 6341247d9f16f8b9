"""GGUF through llama.cpp (``gguf-q8_0`` ... ``gguf-q2_k``): the file llama.cpp deployments run.

A Llama checkpoint (LoRA merged in float32 first) is written as a float32 GGUF with the ``gguf``
package (its writer, tensor-name map and vocabulary readers), then quantized by llama.cpp itself
(``llama_model_quantize`` through llama-cpp-python), so every quantization rule is llama.cpp's:
which tensors get which type, the k-quant scale search, the fallbacks for rows that are not a
multiple of 256 wide. The file is cached by weights hash + type. Its real kernels are not torch
modules: ``model_wrappers.llamacpp_lm`` evaluates the file on llama.cpp; ``emulated=true`` loads
the same file's tensors, dequantized by the ``gguf`` package, into the float32 HF model.

Both libraries are the optional ``gguf`` extra, imported when a ``gguf-*`` precision is built.
This module is the precision (its names, options and the cache of quantized files); the format
(writing the float32 file, reading a file back) is ``gguf_writer``, llama.cpp's C bindings (the
quantizers, the build) are ``ggml``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig

from harness_ext.errors import MuseQuantError
from model_wrappers.precisions.cached import cached_checkpoint
from model_wrappers.precisions.ggml import GGUF_INSTALL as GGUF_INSTALL  # re-export: demo
from model_wrappers.precisions.ggml import ggml_quantize as ggml_quantize  # re-export: codes
from model_wrappers.precisions.ggml import import_gguf, llama_cpp_build, quantize_file
from model_wrappers.precisions.gguf_writer import (
    WRITER_VERSION,
    check_llama,
    load_dequantized,
    write_f32_gguf,
)
from model_wrappers.precisions.registry import (
    Built,
    Family,
    Option,
    Precision,
    Source,
    register,
)

log = logging.getLogger(__name__)

#: llama.cpp's type names, as its ``llama-quantize`` spells them; f32 is the unquantized file.
GGUF_TYPES = ("f32", "q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_0", "q3_k_m", "q2_k")
#: The file inside a cached entry.
GGUF_FILE = "model.gguf"

GGUF = Family("llama.cpp", runtime="llama.cpp")
#: llama.cpp's KV-cache types (its ggml type numbers).
CACHE_TYPES = {"f32": 0, "f16": 1, "q8_0": 8}


def _parse_cache_type(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in CACHE_TYPES:
        raise ValueError(f"expected one of {', '.join(CACHE_TYPES)}")
    return text


GGUF_OPTIONS = {
    "cache_type": Option(
        "f32", _parse_cache_type, "llama.cpp's KV cache: f32 (as float32), f16 (its default), q8_0"
    ),
}


def gguf_type(precision: Precision) -> str:
    return precision.name.removeprefix("gguf-")


def gguf_file(source: Source, precision: Precision) -> tuple[Path, dict[str, Any]]:
    """The GGUF file of ``precision`` for ``source`` (cached: written and quantized on a miss)
    and what it holds: type, sha256, tensor types, llama.cpp build, cache entry."""
    gguf, llama_cpp = import_gguf()
    kind = gguf_type(precision)
    build = llama_cpp_build(llama_cpp)
    key = {
        "format": "gguf",
        "weights": source.digest,
        "type": kind,
        "writer": WRITER_VERSION,
        "gguf": importlib.metadata.version("gguf"),
        "llama_cpp_python": build["llama_cpp_python"],
    }

    check_llama(AutoConfig.from_pretrained(str(source.folder)), precision.name)

    def write(folder: Path) -> None:
        model = source.load(dtype=torch.float32)
        target = folder / GGUF_FILE
        if kind == "f32":
            write_f32_gguf(model, source.folder, target)
        else:
            f32 = folder / "f32.gguf"
            write_f32_gguf(model, source.folder, f32)
            del model
            ftype = gguf.LlamaFileType[f"MOSTLY_{kind.upper()}"]
            log.info("llama.cpp quantizing %s to %s", source.folder, kind)
            quantize_file(llama_cpp, f32, target, int(ftype), torch.get_num_threads())
            f32.unlink()
        digest = hashlib.sha256()
        with target.open("rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                digest.update(block)
        (folder / f"{GGUF_FILE}.sha256").write_text(digest.hexdigest())

    folder, hit = cached_checkpoint(key, write)
    path = folder / GGUF_FILE
    reader = gguf.GGUFReader(str(path))
    return path, {
        "gguf_type": kind,
        "file": str(path),
        "file_sha256": (folder / f"{GGUF_FILE}.sha256").read_text().strip(),
        "tensor_types": dict(Counter(t.tensor_type.name for t in reader.tensors)),
        "tensor_bytes": int(sum(int(t.n_bytes) for t in reader.tensors)),
        "llama_cpp": build,
        "cache": {"folder": str(folder), "hit": hit},
    }


def quantize_gguf(source: Source, precision: Precision) -> Built:
    """The torch model of a gguf precision: emulated mode only (its real kernels are llama.cpp's,
    which the muse lm-eval model hands the file to)."""
    if not precision.emulated:
        raise MuseQuantError(
            f"{precision.name} runs on llama.cpp's kernels, not as a torch model: evaluate it "
            "with --model muse (which runs it on llama.cpp), or pass emulated=true for its "
            "dequantized weights in torch"
        )
    if precision.options["cache_type"] != "f32":
        raise MuseQuantError(
            f"{precision.name}: emulated=true runs dense float32 layers in torch; "
            f"cache_type={precision.options['cache_type']} applies to llama.cpp only"
        )
    path, record = gguf_file(source, precision)
    model = source.load(dtype=torch.float32)
    return model, {**record, "emulated_tensors": load_dequantized(model, path)}


for _type in GGUF_TYPES:
    register(f"gguf-{_type}", quantize_gguf, GGUF, GGUF_OPTIONS)
