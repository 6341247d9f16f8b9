"""The GGUF format of an HF Llama: the float32 file written (config, vocabulary, tensors under
llama.cpp's names, q/k rows in its RoPE order) and a quantized file read back into the HF model.

Its own module because the mapping between HF Llama and llama.cpp's ``llama`` architecture is
one idea, used both ways: to write the file llama.cpp quantizes and to load that file's
dequantized tensors (emulated mode). It uses the ``gguf`` package (its writer, tensor-name map,
vocabulary readers and dequantizers).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import AutoTokenizer

from harness_ext.errors import MuseQuantError
from model_wrappers.precisions.ggml import import_gguf

#: Bumped whenever the float32 file this module writes changes (part of the cache key).
#: 2: the file carries the checkpoint's own tokenizer.json (``tokenizer.huggingface.json``).
WRITER_VERSION = 3
#: The Llama configuration llama.cpp's ``llama`` graph computes.
PLAIN_LLAMA = {
    "rope_type": "default", "attention_bias": False, "mlp_bias": False, "hidden_act": "silu"
}


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
    """``model`` (float32 HF Llama) and the tokenizer in ``folder`` as a float32 GGUF.

    The vocabulary goes in as llama.cpp reads it (``tokenizer.ggml.*``) and, under the GGUF
    spec's ``tokenizer.huggingface.json``, as the HF tokenizer itself: a byte-level BPE's
    pre-tokenizer (the toy world's whitespace split) has no ``tokenizer.ggml.pre`` name, so
    transformers, which rebuilds a tokenizer from ``tokenizer.ggml.*`` with the split regex that
    name selects, would not give the checkpoint's ids; a GGUF checkpoint reads this key first."""
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
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    specials = set(tokenizer.all_special_ids)
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
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # the GGUF spec's key for the HF tokenizer itself (see below)
        writer.add_string(gguf.Keys.Tokenizer.HF_JSON, backend.to_str())

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    # A model whose output head is its embedding (SmolLM2's tie_word_embeddings) has one tensor,
    # as in llama.cpp's own converter: without ``output.weight`` llama.cpp reads token_embd.
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    for hf_name, tensor in model.state_dict().items():
        if hf_name not in tied:
            writer.add_tensor(
                gguf_name(names, hf_name), _to_gguf(hf_name, tensor, heads, kv_heads)
            )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def tensor_record(reader: Any) -> dict[str, Any]:
    """What a GGUF file's tensors are (a ``GGUFReader``'s): how many of each ggml type, and
    their bytes (what llama.cpp maps)."""
    return {
        "tensor_types": dict(Counter(t.tensor_type.name for t in reader.tensors)),
        "tensor_bytes": int(sum(int(t.n_bytes) for t in reader.tensors)),
    }


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


def load_dequantized(model: nn.Module, path: Path) -> int:
    """Every tensor of the GGUF at ``path``, dequantized by the gguf package, into ``model``'s
    float32 parameters (q/k rows back to HF's order); returns how many were quantized."""
    gguf, _ = import_gguf()
    config = model.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    reader = gguf.GGUFReader(str(path))
    if config.tie_word_embeddings and any(t.name == "output.weight" for t in reader.tensors):
        # llama.cpp's quantizer writes the tied head as a tensor of its own (its type can
        # differ from the embedding's): untie it here, so the head holds what llama.cpp reads.
        head = model.get_output_embeddings()
        head.weight = nn.Parameter(head.weight.detach().clone())
        config.tie_word_embeddings = False
    params = dict(model.named_parameters())
    by_gguf = {gguf_name(names, name): name for name in params}
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
