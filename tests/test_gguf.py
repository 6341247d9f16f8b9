"""GGUF precisions: the float32 file on llama.cpp reproduces the fp32 HF model (a LoRA merged
first too), emulated mode is the file dequantized, unlearn.json's ``gguf-q4_k`` codes are the
ones llama.cpp stores, files are cached once, bad input is one line, and lm-eval runs it.

Models: the micro toy world's target (byte-level BPE; its 128-wide rows make llama.cpp fall back
from k-quants to 32-element types for most tensors) and a random 256-wide Llama built here, so
that the k-quant super-blocks of 256 are really used. The dequantization reference is written
here from the GGUF block layouts (ggml-common.h), independent of the gguf package.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from muse_run import one_line, run_tasks
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, LlamaConfig

from bench.results import flat_metrics
from harness_ext.errors import MuseQuantError
from model_wrappers.codes import changed_codes, codes
from model_wrappers.loading import load_causal_lm
from model_wrappers.opening import open_checkpoint
from model_wrappers.precisions import resolve_precision

gguf = pytest.importorskip("gguf", reason="pip install 'muse-quant[gguf]' to test GGUF")
pytest.importorskip("llama_cpp", reason="pip install 'muse-quant[gguf]' to test GGUF")

from model_wrappers.llamacpp_lm import LlamaCppLM  # noqa: E402
from model_wrappers.muse_lm import MuseLM  # noqa: E402
from model_wrappers.muse_model import muse_model  # noqa: E402
from model_wrappers.precisions import gguf as gguf_precision  # noqa: E402
from model_wrappers.precisions.ggml import ggml_quantize  # noqa: E402
from model_wrappers.precisions.gguf_writer import _to_gguf, gguf_name  # noqa: E402


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, micro_world: Path) -> Path:
    """An empty cache root for this test (the toy world is found in the tests' cache first)."""
    root = tmp_path / "cache"
    monkeypatch.setenv("MUSE_QUANT_CACHE", str(root))
    return root


@pytest.fixture(scope="module")
def wide(target: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random Llama whose rows are 256 wide (k-quant super-blocks), with the toy tokenizer."""
    folder = tmp_path_factory.mktemp("wide-llama")
    config = LlamaConfig(
        vocab_size=1024, hidden_size=256, intermediate_size=512, num_hidden_layers=1,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(target / name, folder / name)
    return folder


@pytest.fixture(scope="module", params=["tokenizer.model", "tokenizer.json"])
def llama2_style(
    request: pytest.FixtureRequest, micro_world: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A random Llama with a tokenizer made as Llama-2's is: a SentencePiece BPE model with byte
    fallback and Llama-2's settings (identity normalization, digits split, spaces kept), with
    its tokenizer.json; the "tokenizer.json" variant keeps only that file."""
    import sentencepiece as spm
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("llama2-style")
    corpus = json.loads((micro_world / "pretrain" / "generic.json").read_text())
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_prefix=str(folder / "tokenizer"), vocab_size=600,
        model_type="bpe", byte_fallback=True, character_coverage=1.0, unk_id=0, bos_id=1,
        eos_id=2, pad_id=-1, normalization_rule_name="identity", remove_extra_whitespaces=False,
        split_digits=True, allow_whitespace_only_pieces=True, minloglevel=2,
    )
    (folder / "tokenizer.vocab").unlink()
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
        "unk_token": "<unk>", "add_bos_token": True, "legacy": False,
    }))
    AutoTokenizer.from_pretrained(folder).save_pretrained(folder)  # writes tokenizer.json
    if request.param == "tokenizer.json":
        (folder / "tokenizer.model").unlink()
    config = LlamaConfig(
        vocab_size=600, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False,
    )
    torch.manual_seed(1)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    return folder


def test_llama2_style_tokenizer_converts_and_runs(
    llama2_style: Path, micro_world: Path, cache: Path
) -> None:
    """Llama-2's tokenizer is written as llama.cpp's SentencePiece ("llama") vocabulary with its
    byte tokens; from tokenizer.model (with its scores) llama.cpp's own tokenizer then gives the
    HF tokenizer's ids, so the file is a complete deployment; the f32 file on llama.cpp
    reproduces the fp32 model on non-ASCII text."""
    real = muse_model({"pretrained": str(llama2_style), "precision": "gguf-f32"})
    reader = gguf.GGUFReader(real.provenance["precision"]["library_config"]["file"])
    assert reader.fields["tokenizer.ggml.model"].contents() == "llama"
    types = Counter(reader.fields["tokenizer.ggml.token_type"].contents())
    assert types[gguf.TokenType.BYTE] == 256
    sample = [text + " — ünïcödé ✓ 2024" for text in texts(micro_world, 3)]
    assert any(t.startswith("<0x") for t in real.tokenizer.tokenize(sample[0]))  # byte fallback
    if (llama2_style / "tokenizer.model").is_file():
        for text in texts(micro_world, 16) + sample:
            own = real.llama.tokenize(text.encode(), add_bos=True, special=False)
            assert own == real.tokenizer(text)["input_ids"]
    fp32 = muse_model(dict(pretrained=str(llama2_style), precision="fp32"))
    for hf, cpp in zip(fp32.token_stats(sample), real.token_stats(sample), strict=True):
        assert np.abs(hf.logprobs - cpp.logprobs).max() <= 1e-4


def texts(world: Path, n: int = 6) -> list[str]:
    return json.loads((world / "data" / "privleak" / "forget.json").read_text())[:n]


# --------------------------------------------------------------------------- exactness


@pytest.fixture(scope="module")
def f32_pair(target: Path) -> tuple[MuseLM, LlamaCppLM]:
    fp32 = muse_model(dict(pretrained=str(target), precision="fp32", batch_size=8))
    real = muse_model({"pretrained": str(target), "precision": "gguf-f32"})
    assert isinstance(real, LlamaCppLM)
    return fp32, real


def test_f32_gguf_reproduces_fp32_token_statistics(
    f32_pair: tuple[MuseLM, LlamaCppLM], micro_world: Path
) -> None:
    fp32, real = f32_pair
    sample = texts(micro_world)
    for hf, cpp in zip(fp32.token_stats(sample), real.token_stats(sample), strict=True):
        for field in ("logprobs", "mu", "sigma", "lowercase_logprobs"):
            a, b = getattr(hf, field), getattr(cpp, field)
            assert a.shape == b.shape and np.abs(a - b).max() <= 1e-4, field


def test_f32_gguf_reproduces_fp32_greedy_generations(
    f32_pair: tuple[MuseLM, LlamaCppLM], micro_world: Path
) -> None:
    from lm_eval.api.instance import Instance

    fp32, real = f32_pair
    rows = json.loads((micro_world / "data" / "verbmem" / "forget.json").read_text())
    requests = [
        Instance("generate_until", {}, (row["prompt"], {"until": ["\n\n"], "max_gen_toks": 48}), i)
        for i, row in enumerate(rows)
    ]
    expected = fp32.generate_until(requests, disable_tqdm=True)
    assert real.generate_until(requests, disable_tqdm=True) == expected
    assert sum(len(text) for text in expected) > 20 * len(rows)  # real continuations


def test_f32_gguf_emulated_is_the_fp32_model(target: Path, cache: Path) -> None:
    """Writer and reader invert each other: every tensor (q/k rows re-ordered for llama.cpp's
    RoPE and back) comes back bit-equal."""
    model, prov = load_causal_lm(str(target), precision="gguf-f32", emulated=True)
    reference = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32)
    for (name, a), (_, b) in zip(
        model.state_dict().items(), reference.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert prov["precision"]["library_config"]["emulated_tensors"] == 0


def test_lora_is_merged_in_float32_before_conversion(
    target: Path, micro_world: Path, tmp_path: Path, cache: Path
) -> None:
    """An adapter is merged into the float32 base first: the f32 file holds the merged weights
    (bit-equal), is cached under its own key, and llama.cpp reproduces the merged fp32 model."""
    from peft import LoraConfig, get_peft_model

    base = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32)
    lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "up_proj"]))
    with torch.no_grad():
        for name, param in lora.named_parameters():
            if "lora_B" in name:
                gen = torch.Generator().manual_seed(0)
                param.copy_(torch.randn(param.shape, generator=gen) * 0.05)
    lora.save_pretrained(tmp_path / "lora")
    adapter = str(tmp_path / "lora")
    merged, _ = load_causal_lm(str(target), adapter=adapter, precision="fp32")
    emulated, prov = load_causal_lm(
        str(target), adapter=adapter, precision="gguf-f32", emulated=True
    )
    for (name, a), (_, b) in zip(
        emulated.state_dict().items(), merged.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    _, plain = load_causal_lm(str(target), precision="gguf-f32", emulated=True)
    files = [p["precision"]["library_config"]["file"] for p in (prov, plain)]
    assert files[0] != files[1]
    real = muse_model(
        {"pretrained": str(target), "adapter": adapter, "precision": "gguf-f32"}
    )
    reference = muse_model(dict(pretrained=str(target), adapter=adapter, precision="fp32"))
    sample = texts(micro_world, 3)
    for hf, cpp in zip(reference.token_stats(sample), real.token_stats(sample), strict=True):
        assert np.abs(hf.logprobs - cpp.logprobs).max() <= 1e-4
    assert real.provenance["adapter"]["merged"] is True


# --------------------------------------------------------------------------- emulated mode


def _f16(raw: np.ndarray) -> np.ndarray:
    return raw.view(np.float16).astype(np.float32)


def q4_k_affine(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K blocks' (step, offset) per sub-block of 32: value = step * code - offset."""
    d, dmin, sc = _f16(b[..., 0:2].copy()), _f16(b[..., 2:4].copy()), b[..., 4:16]
    high_scale = (sc[..., 8:12] & 15) | ((sc[..., 0:4] >> 6) << 4)
    high_min = (sc[..., 8:12] >> 4) | ((sc[..., 4:8] >> 6) << 4)
    scale = np.concatenate([sc[..., 0:4] & 63, high_scale], -1)
    mins = np.concatenate([sc[..., 4:8] & 63, high_min], -1)
    return d * scale, dmin * mins


def reference_dequantize(data: np.ndarray, kind: str) -> np.ndarray:
    """Rows of ``kind`` blocks (uint8 bytes per row) as float32, from ggml's block layouts."""
    rows = data.reshape(data.shape[0], -1)
    if kind == "F32":
        return data.astype(np.float32)
    size = {"Q8_0": 34, "Q4_0": 18, "Q5_0": 22, "Q4_K": 144, "Q6_K": 210}[kind]
    b = rows.reshape(rows.shape[0], -1, size)
    if kind == "Q8_0":  # d, 32 int8
        return (_f16(b[..., :2].copy()) * b[..., 2:].view(np.int8)).reshape(len(rows), -1)
    if kind == "Q4_0":  # d, 16 bytes: low nibbles are elements 0-15, high 16-31
        qs = b[..., 2:]
        q = np.concatenate([qs & 15, qs >> 4], axis=-1).astype(np.float32) - 8
        return (_f16(b[..., :2].copy()) * q).reshape(len(rows), -1)
    if kind == "Q5_0":  # d, 32 high bits, 16 bytes of low nibbles
        qh = b[..., 2:6].copy().view(np.uint32)
        high = (qh >> np.arange(32, dtype=np.uint32)) & 1
        qs = b[..., 6:]
        low = np.concatenate([qs & 15, qs >> 4], axis=-1)
        q = (low | (high << 4)).astype(np.float32) - 16
        return (_f16(b[..., :2].copy()) * q).reshape(len(rows), -1)
    if kind == "Q4_K":  # d, dmin, 12 bytes of 6-bit scales/mins for 8 sub-blocks, 128 bytes
        step, low = q4_k_affine(b)
        qs = b[..., 16:]
        chunks = qs.reshape(*qs.shape[:-1], 4, 32)  # 4 x 64 elements: low nibbles, then high
        q = np.stack([chunks & 15, chunks >> 4], axis=-2).reshape(*qs.shape[:-1], 8, 32)
        return (step[..., None] * q - low[..., None]).reshape(len(rows), -1)
    # Q6_K: 128 bytes low 4 bits, 64 bytes high 2 bits, 16 int8 scales, d
    ql = b[..., :128].reshape(*b.shape[:-1], 2, 64)
    qh = b[..., 128:192].reshape(*b.shape[:-1], 2, 32)
    scales, d = b[..., 192:208].view(np.int8).astype(np.float32), _f16(b[..., 208:210].copy())
    parts = [
        (ql[..., :32] & 15) | ((qh & 3) << 4),
        (ql[..., 32:] & 15) | (((qh >> 2) & 3) << 4),
        (ql[..., :32] >> 4) | (((qh >> 4) & 3) << 4),
        (ql[..., 32:] >> 4) | (((qh >> 6) & 3) << 4),
    ]
    q = np.stack(parts, axis=-2).astype(np.float32) - 32  # (..., 2 halves, 4 parts, 32)
    q = q.reshape(*b.shape[:-1], 16, 16)
    return (d[..., None] * scales[..., None] * q).reshape(len(rows), -1)


@pytest.mark.parametrize(
    ("world", "name"), [("target", "gguf-q4_0"), ("wide", "gguf-q4_k_m"), ("wide", "gguf-q6_k")]
)
def test_emulated_weights_are_the_file_dequantized(
    world: str, name: str, request: pytest.FixtureRequest, cache: Path
) -> None:
    """Every tensor of the quantized file, dequantized by the reference above, is the emulated
    model's weight; quantization really happened (few levels per block, not the fp32 weights)."""
    folder = request.getfixturevalue(world)
    model, prov = load_causal_lm(str(folder), precision=name, emulated=True)
    record = prov["precision"]["library_config"]
    reader = gguf.GGUFReader(record["file"])
    config = model.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    params = dict(model.named_parameters())
    by_gguf = {gguf_name(names, n): n for n in params}
    reference = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    fp32 = dict(reference.named_parameters())
    kinds = set()
    for tensor in reader.tensors:
        kind = tensor.tensor_type.name
        kinds.add(kind)
        values = reference_dequantize(np.asarray(tensor.data), kind)
        hf_name = by_gguf[tensor.name]
        heads = {"q_proj": config.num_attention_heads, "k_proj": config.num_key_value_heads}
        for proj, n_heads in heads.items():
            if f"self_attn.{proj}." in hf_name:  # rows back from llama.cpp's RoPE order
                half = values.shape[0] // n_heads // 2
                values = values.reshape(n_heads, half, 2, -1).swapaxes(1, 2).reshape(values.shape)
        weight = params[hf_name].detach().numpy()
        assert np.array_equal(weight.reshape(values.shape), values), (tensor.name, kind)
        if kind != "F32":
            assert not np.array_equal(weight, fp32[hf_name].detach().numpy()), tensor.name
    expected = {"gguf-q4_0": {"Q4_0"}, "gguf-q4_k_m": {"Q4_K", "Q6_K"}, "gguf-q6_k": {"Q6_K"}}
    assert expected[name] <= kinds
    assert record["emulated_tensors"] == sum(t.tensor_type.name != "F32" for t in reader.tensors)
    assert record["tensor_types"] == dict(Counter(t.tensor_type.name for t in reader.tensors))


@pytest.mark.parametrize(("world", "kind"), [("wide", "Q4_K"), ("target", "Q5_0")])
def test_gguf_q4_k_codes_are_llama_cpp_s(
    world: str, kind: str, request: pytest.FixtureRequest, cache: Path
) -> None:
    """unlearn.json's ``gguf-q4_k`` codes: ggml's quantizer gives the very bytes llama.cpp wrote
    into the gguf-q4_k_m file (Q5_0 on 128-wide rows), and the codes read from them rebuild the
    file's dequantized values."""
    folder = request.getfixturevalue(world)
    _, prov = load_causal_lm(str(folder), precision="gguf-q4_k_m", emulated=True)
    reader = gguf.GGUFReader(prov["precision"]["library_config"]["file"])
    fp32 = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    config = fp32.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    by_gguf = {gguf_name(names, n): n for n, _ in fp32.named_parameters()}
    checked = 0
    for tensor in reader.tensors:
        if tensor.tensor_type.name != kind or not tensor.name.startswith("blk."):
            continue
        hf_name = by_gguf[tensor.name]
        heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
        rows = _to_gguf(hf_name, fp32.get_parameter(hf_name), heads, kv_heads)
        stored = np.asarray(tensor.data)
        assert np.array_equal(ggml_quantize(rows, kind), stored), tensor.name
        found = codes(torch.from_numpy(rows), "gguf-q4_k").numpy().reshape(len(rows), -1)
        values = reference_dequantize(stored, kind)
        if kind == "Q5_0":
            d = _f16(stored.reshape(len(rows), -1, 22)[..., :2].copy())
            rebuilt = d * (found.reshape(len(rows), -1, 32) - 16)
        else:
            step, low = q4_k_affine(stored.reshape(len(rows), -1, 144))
            rebuilt = step[..., None] * found.reshape(len(rows), -1, 8, 32) - low[..., None]
        assert np.array_equal(rebuilt.reshape(values.shape), values), tensor.name
        checked += 1
    assert checked >= 2
    w = torch.from_numpy(rows)
    moved = w.clone()
    moved[:, :32] = moved[:, :32].flip(-1)  # the first block's values trade places
    report = changed_codes({"w": w}, {"w": w.clone()}, ("gguf-q4_k",))
    assert report["gguf-q4_k"]["overall"] == 0.0
    expected = (codes(w, "gguf-q4_k") != codes(moved, "gguf-q4_k")).float().mean().item()
    changed = changed_codes({"w": w}, {"w": moved}, ("gguf-q4_k",))["gguf-q4_k"]["overall"]
    assert 0 < changed == pytest.approx(expected) and changed <= 32 / w.shape[1]


# --------------------------------------------------------------------------- the cache


def test_cache_quantizes_once(target: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second request of a (weights, type) reads the first's file: one conversion, one
    llama.cpp quantization, the same sha256; another type is another entry."""
    calls = {"write": 0, "quantize": 0}
    write, quantize = gguf_precision.write_f32_gguf, gguf_precision.quantize_file

    def counted(name: str, function):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(gguf_precision, "write_f32_gguf", counted("write", write))
    monkeypatch.setattr(gguf_precision, "quantize_file", counted("quantize", quantize))
    source = open_checkpoint(str(target)).source
    q8 = resolve_precision("gguf-q8_0", emulated=True)
    path, first = gguf_precision.gguf_file(source, q8)
    again_path, again = gguf_precision.gguf_file(source, q8)
    assert (first["cache"]["hit"], again["cache"]["hit"]) == (False, True)
    assert again_path == path and calls == {"write": 1, "quantize": 1}
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert first["file_sha256"] == again["file_sha256"] == digest
    assert path.is_relative_to(cache) and sorted(p.name for p in path.parent.iterdir()) == [
        "model.gguf", "model.gguf.sha256", "muse_quant_key.json"
    ]  # the float32 intermediate is gone
    other, _ = gguf_precision.gguf_file(source, resolve_precision("gguf-q4_0", emulated=True))
    assert other.parent != path.parent and calls == {"write": 2, "quantize": 2}


# --------------------------------------------------------------------------- bad input


def cached_files(cache: Path) -> list[Path]:
    return sorted(p for p in cache.rglob("*") if p.is_file() and p.suffix != ".lock")


def test_non_llama_is_refused_before_anything_is_cached(
    target: Path, tmp_path: Path, cache: Path
) -> None:
    folder = tmp_path / "gpt2"
    config = GPT2Config(vocab_size=1024, n_positions=64, n_embd=32, n_layer=1, n_head=2)
    GPT2LMHeadModel(config).save_pretrained(folder)
    shutil.copy(target / "tokenizer.json", folder / "tokenizer.json")
    for emulated in (True, False):
        with pytest.raises(MuseQuantError) as err:
            if emulated:
                load_causal_lm(str(folder), precision="gguf-q4_k_m", emulated=True)
            else:
                muse_model({"pretrained": str(folder), "precision": "gguf-q4_k_m"})
        assert "supports Llama-family checkpoints" in one_line(err) and "gpt2" in one_line(err)
    assert cached_files(cache) == []


def test_unsupported_type_names_the_supported_ones() -> None:
    with pytest.raises(MuseQuantError) as err:
        resolve_precision("gguf-q4_k_s")
    message = one_line(err)
    assert all(f"gguf-{t}" in message for t in gguf_precision.GGUF_TYPES)


@pytest.mark.parametrize("module", ["llama_cpp", "gguf", "sentencepiece"])
def test_missing_library_is_one_line(
    module: str, target: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # import <module> -> ImportError
    for build in (
        lambda: load_causal_lm(str(target), precision="gguf-q4_0", emulated=True),
        lambda: muse_model({"pretrained": str(target), "precision": "gguf-q4_0"}),
    ):
        with pytest.raises(MuseQuantError) as err:
            build()
        assert "pip install 'muse-quant[gguf]'" in one_line(err)
    assert cached_files(cache) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"precision": "gguf-q4_0"}, "runs on llama.cpp's kernels, not as a torch model"),
        ({"precision": "gguf-q4_0", "emulated": True, "cache_type": "f16"}, "cache_type=f16"),
        ({"precision": "gguf-q4_0", "cache_type": "q4"}, "cache_type=q4: expected one of f32"),
    ],
)
def test_torch_loader_refusals(target: Path, kwargs: dict, message: str, cache: Path) -> None:
    with pytest.raises(MuseQuantError) as err:
        load_causal_lm(str(target), **kwargs)
    assert message in one_line(err)
    assert cached_files(cache) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"cache_typ": "f16"}, "unknown argument cache_typ (did you mean 'cache_type'?)"),
        ({"truncation": "true"}, "truncation does not apply to a gguf precision on llama.cpp"),
        ({"compute_dtype": "bf16"}, "unknown option(s) compute_dtype; its options: cache_type"),
        ({"merge": "false"}, "merge=false (an adapter unmerged on a quantized base)"),
        ({"merge": "flase"}, "merge=flase: expected true or false"),
        ({"context_overflow": "cut"}, "context_overflow=cut: choose one of error, truncate"),
    ],
)
def test_llama_cpp_model_refusals(target: Path, args: dict, message: str, cache: Path) -> None:
    with pytest.raises(MuseQuantError) as err:
        muse_model({"pretrained": str(target), "precision": "gguf-q4_0", **args})
    assert message in one_line(err)
    assert cached_files(cache) == []


def test_cli_refusal_exits_2(
    micro_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from muse_quant.cli import main

    argv = [
        "eval", "--model", "muse", "--model_args",
        f"pretrained={micro_world / 'models' / 'target'},precision=gguf-q4_k_s",
        "--metadata", f"muse_data={micro_world / 'data'}", "--tasks", "muse_news",
        "--device", "cpu", "--output_path", str(tmp_path / "out"),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("muse-quant: error: ") and "gguf-q4_k_m" in err[-1]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.json"))


# --------------------------------------------------------------------------- lm-eval


def test_lm_eval_run_on_llama_cpp(micro_world: Path, target: Path) -> None:
    """The MUSE suite through lm-eval on llama.cpp: the f32 file's metrics are fp32's, the
    results file has the muse model's schema, and the provenance names the file and build."""
    data = micro_world / "data"
    fp32 = run_tasks(target, data, ["muse_news"], model_args={"precision": "fp32"})
    f32 = run_tasks(target, data, ["muse_news"], model_args={"precision": "gguf-f32"})
    q4 = run_tasks(target, data, ["muse_news"], model_args={"precision": "gguf-q4_k_m"})
    assert set(f32["results"]) == set(fp32["results"]) == set(q4["results"])
    reference, same = flat_metrics(fp32), flat_metrics(f32)
    assert set(same) == set(reference)
    for key, value in reference.items():
        assert same[key] == pytest.approx(value, abs=1e-3), key
    prov = q4["config"]["muse_provenance"]
    library = prov["precision"]["library_config"]
    assert prov["precision"]["name"] == "gguf-q4_k_m" and library["gguf_type"] == "q4_k_m"
    assert library["file_sha256"] == hashlib.sha256(Path(library["file"]).read_bytes()).hexdigest()
    assert library["llama_cpp"]["llama_cpp_python"] == prov["libraries"]["llama_cpp_python"]
    assert "CPU" in library["llama_cpp"]["system_info"]
    assert 0 < prov["resident_weight_bytes"] < 0.5 * fp32["config"]["muse_provenance"][
        "resident_weight_bytes"
    ]
    assert q4["config"]["muse_truncation"] == fp32["config"]["muse_truncation"]
