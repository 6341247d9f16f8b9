"""GGUF through llama.cpp (``gguf-q8_0`` ... ``gguf-q2_k``): the file llama.cpp deployments run.

A Llama checkpoint (LoRA merged in float32 first) is written as a float32 GGUF with the ``gguf``
package (its writer, tensor-name map and vocabulary readers), then quantized by llama.cpp itself
(``llama_model_quantize`` through llama-cpp-python), so every quantization rule is llama.cpp's:
which tensors get which type, the k-quant scale search, the fallbacks for rows that are not a
multiple of 256 wide. The file is cached by weights hash + type. Its real kernels are not torch
modules: ``model_wrappers.llamacpp_lm`` evaluates the file on llama.cpp; ``emulated=true`` loads
the same file's tensors, dequantized by the ``gguf`` package, into the float32 HF model.

Both libraries are the optional ``gguf`` extra, imported when a ``gguf-*`` precision is built.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.metadata
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import AutoConfig, AutoTokenizer

from harness_ext.errors import MuseQuantError
from model_wrappers.precisions.cached import cached_checkpoint
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
GGUF_INSTALL = "pip install 'muse-quant[gguf]' (gguf, sentencepiece and llama-cpp-python)"
#: The file inside a cached entry.
GGUF_FILE = "model.gguf"
#: Bumped whenever the float32 file this module writes changes (part of the cache key).
WRITER_VERSION = 1

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
#: The Llama configuration llama.cpp's ``llama`` graph computes.
PLAIN_LLAMA = {
    "rope_type": "default", "attention_bias": False, "mlp_bias": False, "hidden_act": "silu"
}


def import_gguf() -> tuple[Any, Any]:
    """The ``gguf`` and ``llama_cpp`` modules (and sentencepiece, which gguf reads Llama-2's
    tokenizer with), or a one-line error saying how to install them."""
    try:
        import gguf  # optional (the gguf extra)
        import llama_cpp  # optional (the gguf extra); loads libllama
        import sentencepiece  # noqa: F401 - optional (the gguf extra)
    except ImportError as e:
        raise MuseQuantError(
            f"gguf precisions need their optional libraries ({e}); {GGUF_INSTALL}"
        ) from None
    # llama.cpp logs every tensor it loads or quantizes; llama-cpp-python prints what its logger
    # lets through (everything while it is unset): errors only, unless the user set it.
    printed = logging.getLogger("llama-cpp-python")
    if printed.level == logging.NOTSET:
        printed.setLevel(logging.ERROR)
    return gguf, llama_cpp


def gguf_type(precision: Precision) -> str:
    return precision.name.removeprefix("gguf-")


def check_llama(config: Any, name: str) -> None:
    """Refuse what this writer does not map to llama.cpp's ``llama`` architecture."""
    if config.model_type != "llama":
        raise MuseQuantError(
            f"{name}: GGUF conversion supports Llama-family checkpoints (model_type llama: "
            f"MUSE's Llama-2-7B targets, the toy world), not model_type {config.model_type}"
        )
    rope = getattr(config, "rope_parameters", None) or {}
    found = {
        "rope_type": rope.get("rope_type", "default"),
        "attention_bias": bool(getattr(config, "attention_bias", False)),
        "mlp_bias": bool(getattr(config, "mlp_bias", False)),
        "hidden_act": config.hidden_act,
    }
    for field_name, value in found.items():
        if value != PLAIN_LLAMA[field_name]:
            raise MuseQuantError(
                f"{name}: GGUF conversion supports plain Llama (default RoPE, no biases, SiLU); "
                f"this checkpoint has {field_name}={value}"
            )


# --------------------------------------------------------------------------- the float32 file


def _rope_order(weight: np.ndarray, heads: int, inverse: bool = False) -> np.ndarray:
    """q/k rows from HF's rotate-half RoPE order to llama.cpp's pairwise order (or back).

    HF rotates dimension i with i + d/2 of each head; llama.cpp's ``llama`` graph rotates 2i with
    2i + 1, so row i goes to 2i and row i + d/2 to 2i + 1.
    """
    rows, cols = weight.shape
    half = rows // heads // 2
    shape = (heads, half, 2, cols) if inverse else (heads, 2, half, cols)
    return weight.reshape(shape).swapaxes(1, 2).reshape(rows, cols)


def _vocabulary(gguf: Any, folder: Path) -> Any:
    """The tokenizer as the gguf package reads it: Llama-2's SentencePiece model
    (tokenizer.model, with its scores, so that llama.cpp tokenizes the file as Llama-2 does),
    else its tokenizer.json form (BPE with byte fallback, no scores), else a byte-level (GPT-2
    style) BPE such as the toy world's."""
    kinds = (gguf.vocab.SentencePieceVocab, gguf.vocab.LlamaHfVocab, gguf.vocab.BpeVocab)
    for kind in kinds:
        try:
            return kind(folder)
        except (FileNotFoundError, TypeError):  # not this kind of tokenizer
            continue
    raise MuseQuantError(
        f"{folder}: no tokenizer.json of a Llama (SentencePiece BPE) or byte-level BPE tokenizer; "
        "GGUF conversion reads one of those"
    )


def write_f32_gguf(model: nn.Module, folder: Path, path: Path) -> None:
    """``model`` (float32 HF Llama) and the tokenizer in ``folder`` as a float32 GGUF."""
    gguf, _ = import_gguf()
    config = model.config
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    writer.add_name(Path(config._name_or_path or folder).name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)

    vocab = _vocabulary(gguf, folder)
    tokens, scores, types = (list(column) for column in zip(*vocab.all_tokens(), strict=True))
    specials = set(AutoTokenizer.from_pretrained(str(folder)).all_special_ids)
    for i in specials:  # byte-level BPE vocabularies list their special tokens as normal ones
        if i < len(types) and types[i] == gguf.TokenType.NORMAL:
            types[i] = gguf.TokenType.CONTROL
    for i in range(len(tokens), config.vocab_size):  # embedding rows no token uses
        tokens.append(f"[PAD{i}]".encode())
        scores.append(-1000.0)
        types.append(gguf.TokenType.UNUSED)
    writer.add_tokenizer_model(vocab.tokenizer_model)
    if vocab.tokenizer_model == "gpt2":
        writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(
        folder, load_merges=vocab.tokenizer_model == "gpt2", n_vocab=config.vocab_size
    )
    special.add_to_gguf(writer, quiet=True)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    for hf_name, tensor in model.state_dict().items():
        writer.add_tensor(
            gguf_name(names, hf_name), _to_gguf(hf_name, tensor, heads, kv_heads)
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def gguf_name(names: Any, hf_name: str) -> str:
    """llama.cpp's name of an HF Llama tensor (``model.layers.0.self_attn.q_proj.weight`` ->
    ``blk.0.attn_q.weight``), through the gguf package's map."""
    name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
    if name is None:
        raise MuseQuantError(f"GGUF conversion: no llama.cpp tensor for {hf_name}")
    return name


def _to_gguf(hf_name: str, tensor: torch.Tensor, heads: int, kv_heads: int) -> np.ndarray:
    array = tensor.detach().float().cpu().numpy()
    if hf_name.endswith("self_attn.q_proj.weight"):
        return _rope_order(array, heads)
    if hf_name.endswith("self_attn.k_proj.weight"):
        return _rope_order(array, kv_heads)
    return array


# --------------------------------------------------------------------------- llama.cpp's file


def _ggml(llama_cpp: Any) -> ctypes.CDLL:
    """ggml's own library (its quantizers, its version), which llama-cpp-python ships beside
    libllama."""
    found = sorted((Path(llama_cpp.__file__).parent / "lib").glob("*ggml-base.*"))
    lib = ctypes.CDLL(str(found[0]))
    for name in ("ggml_version", "ggml_commit"):
        getattr(lib, name).restype = ctypes.c_char_p
    lib.ggml_row_size.restype = ctypes.c_size_t
    lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
    lib.ggml_quantize_chunk.argtypes += [ctypes.c_int64] * 3 + [ctypes.c_void_p]
    return lib


def llama_cpp_build(llama_cpp: Any) -> dict[str, Any]:
    """What identifies the llama.cpp that quantizes and runs: llama-cpp-python's version (it
    vendors one llama.cpp commit and builds it from source), ggml's version and commit, and the
    CPU features it was built with."""
    ggml = _ggml(llama_cpp)
    return {
        "llama_cpp_python": importlib.metadata.version("llama_cpp_python"),
        "ggml_version": ggml.ggml_version().decode(),
        "ggml_commit": ggml.ggml_commit().decode(),
        "system_info": llama_cpp.llama_print_system_info().decode().strip(),
    }


def ggml_quantize(rows: np.ndarray, kind: str) -> np.ndarray:
    """``rows`` (one tensor row each) quantized by ggml's own quantizer to ``kind`` (a ggml type
    name: ``Q4_K``, ``Q5_0``), as ``llama_model_quantize`` stores them without an importance
    matrix: each row's block bytes."""
    gguf, llama_cpp = import_gguf()
    ggml = _ggml(llama_cpp)
    qtype = int(gguf.GGMLQuantizationType[kind])
    source = np.ascontiguousarray(rows, dtype=np.float32)
    out = np.empty((source.shape[0], ggml.ggml_row_size(qtype, source.shape[1])), np.uint8)
    ggml.ggml_quantize_chunk(
        qtype, source.ctypes.data, out.ctypes.data, 0, source.shape[0], source.shape[1], None
    )
    return out


def _quantize_file(llama_cpp: Any, source: Path, out: Path, ftype: int, threads: int) -> None:
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads
    status = llama_cpp.llama_model_quantize(
        str(source).encode(), str(out).encode(), ctypes.byref(params)
    )
    if status != 0:
        raise MuseQuantError(
            f"llama.cpp could not quantize {source} to {out.name} (llama_model_quantize: {status})"
        )


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
            _quantize_file(llama_cpp, f32, target, int(ftype), torch.get_num_threads())
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


# --------------------------------------------------------------------------- emulated mode


def load_dequantized(model: nn.Module, path: Path) -> int:
    """Every tensor of the GGUF at ``path``, dequantized by the gguf package, into ``model``'s
    float32 parameters (q/k rows back to HF's order); returns how many were quantized."""
    gguf, _ = import_gguf()
    config = model.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    params = dict(model.named_parameters())
    by_gguf = {gguf_name(names, name): name for name in params}
    reader = gguf.GGUFReader(str(path))
    quantized = 0
    for tensor in reader.tensors:
        hf_name = by_gguf[tensor.name]
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        target = params[hf_name]
        values = values.reshape(target.shape[0], -1)
        if hf_name.endswith("self_attn.q_proj.weight"):
            values = _rope_order(values, config.num_attention_heads, inverse=True)
        elif hf_name.endswith("self_attn.k_proj.weight"):
            values = _rope_order(values, config.num_key_value_heads, inverse=True)
        with torch.no_grad():
            target.copy_(torch.from_numpy(values.reshape(target.shape)))
        quantized += tensor.tensor_type not in (
            gguf.GGMLQuantizationType.F32,
            gguf.GGMLQuantizationType.F16,
        )
    return quantized


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
