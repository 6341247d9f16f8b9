"""llama.cpp's libraries, as the gguf precisions call them: the optional pair imported (or a
one-line install hint), ggml's own row quantizer, llama.cpp's whole-file quantizer, and what
identifies the llama.cpp build.

Its own module because these are C bindings (ctypes on the libraries llama-cpp-python ships),
used by the precision (the file it quantizes), the file writer and reader (the ``gguf``
package), ``model_wrappers.codes`` (the q4_k codes an update changed) and the llama.cpp model.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import logging
from pathlib import Path
from typing import Any

import numpy as np

from harness_ext.errors import MuseQuantError

GGUF_INSTALL = "pip install 'muse-quant[gguf]' (gguf, sentencepiece and llama-cpp-python)"


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


def quantize_file(llama_cpp: Any, source: Path, out: Path, ftype: int, threads: int) -> None:
    """The GGUF at ``source`` quantized by llama.cpp (``llama_model_quantize``) to ``out``."""
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
