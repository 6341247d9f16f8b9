"""GGUF through llama.cpp (``gguf-q8_0`` ... ``gguf-q2_k``): the file llama.cpp deployments run.

A Llama checkpoint (LoRA merged in float32 first) is written as a float32 GGUF with the ``gguf``
package (its writer, tensor-name map and vocabulary readers), then quantized by llama.cpp itself
(``llama_model_quantize`` through llama-cpp-python), so every quantization rule is llama.cpp's:
which tensors get which type, the k-quant scale search, the fallbacks for rows that are not a
multiple of 256 wide. The file is cached by weights hash + type. Its real kernels are not torch
modules: ``model_wrappers.llamacpp_lm`` evaluates the file on llama.cpp; ``emulated=true`` loads
the same file's tensors, dequantized by the ``gguf`` package, into the float32 HF model.
``gguf-shipped`` hands llama.cpp a GGUF checkpoint's own file instead (``gguf_checkpoint``).

Both libraries are the optional ``gguf`` extra, imported when a ``gguf-*`` precision is built.
This module is the precision (its names, options and the cache of quantized files); the format
(writing the float32 file, reading a file back) is ``gguf_writer``, llama.cpp's C bindings (the
quantizers, the build) are ``ggml``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoConfig

from harness_ext.errors import MuseQuantError
from harness_ext.precision_names import SHIPPED_GGUF
from model_wrappers.precisions.base import (
    Built,
    Family,
    Option,
    Precision,
    Source,
    entry,
)
from model_wrappers.precisions.cached import cached_checkpoint
from model_wrappers.precisions.ggml import GGUF_INSTALL as GGUF_INSTALL  # re-export: demo
from model_wrappers.precisions.ggml import (
    ggml_quantize,
    import_gguf,
    llama_cpp_build,
    quantize_file,
)
from model_wrappers.precisions.gguf_checkpoint import shipped_file
from model_wrappers.precisions.gguf_writer import (
    WRITER_VERSION,
    check_llama,
    load_dequantized,
    tensor_record,
    write_f32_gguf,
)

log = logging.getLogger(__name__)

#: llama.cpp's type names, as its ``llama-quantize`` spells them (f32 is the unquantized file),
#: and the bits of the type most of a file's block weights are stored in.
GGUF_TYPES = {
    "f32": 32, "q8_0": 8, "q6_k": 6, "q5_k_m": 5, "q4_k_m": 4, "q4_0": 4, "q3_k_m": 3, "q2_k": 2,
}  # fmt: skip
#: The file inside a cached entry.
GGUF_FILE = "model.gguf"

GGUF = Family("llama.cpp", runtime="llama.cpp", requires="llama_cpp")
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
    return precision.quantization.removeprefix("gguf-")


def gguf_file(source: Source, precision: Precision) -> tuple[Path, dict[str, Any]]:
    """The GGUF file of ``precision`` for ``source`` (cached: written and quantized on a miss)
    and what it holds: type, sha256, tensor types, llama.cpp build, cache entry. For
    ``gguf-shipped``, the GGUF checkpoint's own file."""
    if precision.shipped:
        return shipped_file(source)
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
        **tensor_record(reader),
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


def q4_k_codes(weight: torch.Tensor, precision: Precision | None = None) -> torch.Tensor:
    """llama.cpp's code of every element, in flattened order, from ggml's own quantizer: Q4_K
    (the type ``gguf-q4_k_m`` stores most block linears in; 0..15, super-blocks of 256 along
    each row), or Q5_0 (0..31), what llama.cpp stores instead for rows that are not a multiple
    of 256 wide (the tiny toy world's 128)."""
    w = weight.detach().float().cpu().numpy()
    if w.shape[1] % 256 == 0:  # 144-byte blocks: d, dmin, 12 scale bytes, 4 x 32 bytes of codes
        chunks = ggml_quantize(w, "Q4_K").reshape(len(w), -1, 144)[..., 16:]
        chunks = chunks.reshape(*chunks.shape[:-1], 4, 32)  # 64 elements: low, then high nibbles
        found = np.stack([chunks & 15, chunks >> 4], axis=-2)
    else:  # 22-byte blocks: d, 32 high bits, 16 bytes of low nibbles (elements 0-15, 16-31)
        blocks = ggml_quantize(w, "Q5_0").reshape(len(w), -1, 22)
        high = (blocks[..., 2:6].copy().view(np.uint32) >> np.arange(32, dtype=np.uint32)) & 1
        low = np.concatenate([blocks[..., 6:] & 15, blocks[..., 6:] >> 4], axis=-1)
        found = low | (high << 4)
    return torch.from_numpy(found.reshape(-1).astype(np.int64))


#: Why ``gguf-shipped`` has no emulated mode.
SHIPPED_DEQUANTIZED = (
    "the shipped file's tensors dequantized are what fp32 evaluates on a GGUF checkpoint; use "
    "precision=fp32"
)

PRECISIONS = tuple(
    entry(
        f"gguf-{kind}", quantize_gguf, GGUF, GGUF_OPTIONS, bits=bits,
        codes=q4_k_codes if kind == "q4_k_m" else None,
    )
    for kind, bits in GGUF_TYPES.items()
) + (
    # The file a GGUF checkpoint ships, on llama.cpp; its bits are the file's (bits_of).
    entry(SHIPPED_GGUF, quantize_gguf, GGUF, GGUF_OPTIONS, not_emulable=SHIPPED_DEQUANTIZED),
)  # fmt: skip
