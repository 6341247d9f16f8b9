"""Deployment precisions: FP8 weight-only (torchao) and HQQ (hqq), on the micro toy world.

Each is checked against a dequantization written here in a few lines of torch: FP8 is
``(w / s).to(float8_e4m3fn) * s`` with ``s = absmax / 448`` per output channel; HQQ is
``(q - zero) * scale`` per group, with ``q`` unpacked here from hqq's packed bytes. Emulated
weights and logits equal the real kernels' bit for bit, the MUSE metrics of both are equal, the
code schemes ``unlearn.json`` reports equal the codes the precisions really hold, and bad input
is one line naming what is supported. (AWQ, through gptqmodel: tests/test_awq.py.)
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from muse_run import (
    block_linears,
    logits,
    one_line,
    real_and_emulated_metrics,
    refused_on_the_command_line,
)
from torch import nn
from transformers import AutoModelForCausalLM

from harness_ext.errors import MuseQuantError
from harness_ext.precision_names import bits_of, precision_order
from model_wrappers.codes import changed_codes, codes
from model_wrappers.loading import load_causal_lm
from model_wrappers.precisions import known_precisions, resolve_precision
from muse_quant.unlearning.recipe import code_change_record

E4M3_MAX = 448.0
needs_hqq = pytest.mark.skipif(
    importlib.util.find_spec("hqq") is None, reason="pip install 'muse-quant[hqq]' to test HQQ"
)


@pytest.fixture(scope="module")
def fp32(target: Path) -> nn.Module:
    return AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32)


# --------------------------------------------------------------------------- FP8 (torchao)


def fp8_reference(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """E4M3 weight-only round trip, one scale per output channel: (dequantized, scale)."""
    scale = w.abs().amax(1, keepdim=True) / E4M3_MAX
    return (w / scale).to(torch.float8_e4m3fn).float() * scale, scale


@pytest.fixture(scope="module")
def fp8(target: Path) -> tuple[nn.Module, dict]:
    return load_causal_lm(str(target), precision="fp8-e4m3")


def test_fp8_equals_the_e4m3_round_trip(fp8: tuple[nn.Module, dict], fp32: nn.Module) -> None:
    from torchao.quantization import Float8Tensor

    model, prov = fp8
    layers = block_linears(model)
    assert layers and type(model.lm_head.weight) is nn.Parameter  # the head stays float32
    for name, module in layers.items():
        weight = module.weight
        assert isinstance(weight, Float8Tensor) and weight.qdata.dtype == torch.float8_e4m3fn
        expected, scale = fp8_reference(fp32.get_submodule(name).weight)
        assert torch.equal(weight.scale, scale), name
        assert torch.equal(weight.dequantize(), expected), name
        assert not torch.equal(expected, fp32.get_submodule(name).weight)
    record = prov["precision"]
    assert (record["name"], record["library"], record["emulated"]) == ("fp8-e4m3", "torchao", False)
    assert record["library_config"]["config"]["granularity"] == "PerRow"
    assert record["library_config"]["kernel"].startswith("torchao Float8Tensor")


def test_fp8_holds_one_byte_per_weight(fp8: tuple[nn.Module, dict], fp32: nn.Module) -> None:
    from model_wrappers.provenance import resident_weight_bytes

    model, prov = fp8
    for name, module in block_linears(model).items():
        out_features, in_features = fp32.get_submodule(name).weight.shape
        assert resident_weight_bytes(module) == out_features * in_features + 4 * out_features
    assert prov["resident_weight_bytes"] < resident_weight_bytes(fp32)


def test_fp8_emulated_equals_real(
    fp8: tuple[nn.Module, dict], target: Path, fp32: nn.Module
) -> None:
    emulated, prov = load_causal_lm(str(target), precision="fp8-e4m3", emulated=True)
    assert prov["precision"]["emulated"]
    assert prov["precision"]["library_config"]["kernel"].startswith("emulated")
    assert prov["precision"]["library_config"]["emulated_modules"] == len(block_linears(fp32))
    for name, module in block_linears(emulated).items():
        assert type(module) is nn.Linear
        assert torch.equal(module.weight, fp8_reference(fp32.get_submodule(name).weight)[0])
    assert torch.equal(logits(emulated), logits(fp8[0]))


def test_fp8_other_types_are_unknown() -> None:
    with pytest.raises(MuseQuantError) as err:
        resolve_precision("fp8-e5m2")
    assert "unknown precision 'fp8-e5m2'" in one_line(err) and "fp8-e4m3" in one_line(err)


# --------------------------------------------------------------------------- HQQ (hqq)


def unpack(packed: torch.Tensor, bits: int) -> torch.Tensor:
    """hqq's 8/4/2/1-bit packing undone: byte row r holds rows r, r + n, ... from the high
    bits down."""
    per_byte = 8 // bits
    mask = 2**bits - 1
    return torch.cat([(packed >> (8 - bits * (i + 1))) & mask for i in range(per_byte)]).float()


def hqq_reference(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes, dequantized weight) from the layer's packed codes and its meta's affine formula
    ``(q - zero) * scale``, one zero and scale per group."""
    meta = module.meta
    q = unpack(module.W_q.data, meta["nbits"])
    return q, ((q - meta["zero"]) * meta["scale"]).reshape(meta["shape"])


@needs_hqq
@pytest.mark.parametrize(("bits", "group"), [(4, 64), (2, 32), (8, 128)])
def test_hqq_equals_its_affine_formula(
    bits: int, group: int, target: Path, fp32: nn.Module
) -> None:
    from hqq.core.quantize import HQQLinear

    model, prov = load_causal_lm(str(target), precision=f"hqq-w{bits}g{group}")
    layers = block_linears(model)
    assert layers and type(model.lm_head) is nn.Linear
    for name, module in layers.items():
        assert isinstance(module, HQQLinear)
        assert (module.meta["nbits"], module.meta["group_size"]) == (bits, group)
        q, dense = hqq_reference(module)
        assert q.min() >= 0 and q.max() <= 2**bits - 1
        assert torch.equal(module.dequantize(), dense), name
        groups = dense.reshape(-1, group)
        assert max(len(torch.unique(g)) for g in groups) <= 2**bits
        original = fp32.get_submodule(name).weight.reshape(-1, group)
        error = (groups - original).abs() / module.meta["scale"]  # in steps of its group
        assert error.max() <= 1.0 and error.mean() < 0.3, name
    config = prov["precision"]["library_config"]
    assert config["quant_config"]["weight_quant_params"]["nbits"] == bits
    assert config["quant_config"]["weight_quant_params"]["group_size"] == group
    assert config["backend"] == "PYTORCH" and prov["libraries"]["hqq"]


@pytest.fixture(scope="module")
def hqq4(target: Path) -> tuple[nn.Module, dict]:
    pytest.importorskip("hqq", reason="pip install 'muse-quant[hqq]' to test HQQ")
    return load_causal_lm(str(target), precision="hqq-w4g64")


def test_hqq_emulated_equals_real(hqq4: tuple[nn.Module, dict], target: Path) -> None:
    emulated, prov = load_causal_lm(str(target), precision="hqq-w4g64", emulated=True)
    assert prov["precision"]["emulated"] and prov["precision"]["library"] == "hqq"
    real = block_linears(hqq4[0])
    for name, module in block_linears(emulated).items():
        assert type(module) is nn.Linear and module.weight.dtype == torch.float32
        assert torch.equal(module.weight, hqq_reference(real[name])[1]), name
    assert torch.equal(logits(emulated), logits(hqq4[0]))


def test_hqq_memory_counts_its_scales(hqq4: tuple[nn.Module, dict], fp32: nn.Module) -> None:
    """Half a byte per weight, plus a float32 scale and zero per group of 64."""
    from model_wrappers.provenance import resident_weight_bytes

    for name, module in block_linears(hqq4[0]).items():
        n = fp32.get_submodule(name).weight.numel()
        assert resident_weight_bytes(module) == n // 2 + 2 * 4 * (n // 64)


@needs_hqq
def test_hqq_compute_dtype(target: Path) -> None:
    model, prov = load_causal_lm(str(target), precision="hqq-w4g64", compute_dtype="bf16")
    assert prov["precision"]["options"]["compute_dtype"] == "bfloat16"
    assert logits(model).dtype == torch.bfloat16
    assert block_linears(model)["model.layers.0.mlp.up_proj"].dequantize().dtype == torch.bfloat16


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("hqq-w7g64", {}, "hqq quantizes 1, 2, 3, 4, 5, 6, 8 bits, not 7"),
        ("hqq-w4g36", {}, "group size that is a multiple of 8, not 36"),
        ("hqq-w4g96", {}, "group size 96 does not divide the input width 128"),
        ("hqq-w4g64", {"sym": "true"}, "unknown option(s) sym; its options: compute_dtype"),
    ],
)
@needs_hqq
def test_hqq_refusals(name: str, options: dict, message: str, target: Path) -> None:
    with pytest.raises(MuseQuantError) as err:
        load_causal_lm(str(target), precision=name, **options)
    assert message in one_line(err)


def test_hqq_emulated_needs_float32() -> None:
    with pytest.raises(MuseQuantError) as err:
        resolve_precision("hqq-w4g64", {"compute_dtype": "bf16"}, emulated=True)
    assert "emulated=true runs dense float32 layers" in one_line(err)


def test_hqq_without_hqq(target: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("hqq", "hqq.core", "hqq.core.quantize"):
        monkeypatch.setitem(sys.modules, module, None)  # import hqq... -> ImportError
    with pytest.raises(MuseQuantError) as err:
        load_causal_lm(str(target), precision="hqq-w4g64")
    assert "pip install 'muse-quant[hqq]'" in one_line(err)


def test_bad_hqq_on_the_command_line(
    micro_world: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Exit 2, one line, no results and nothing cached."""
    monkeypatch.setenv("MUSE_QUANT_CACHE", str(tmp_path / "cache"))
    message = refused_on_the_command_line(micro_world, tmp_path, capsys, "hqq-w5g12")
    assert "multiple of 8, not 12" in message


# --------------------------------------------------------------------------- both


@pytest.mark.parametrize("name", ["fp8-e4m3", pytest.param("hqq-w4g64", marks=needs_hqq)])
def test_emulated_metrics_equal_real(name: str, target: Path, micro_world: Path) -> None:
    """The MUSE suite (lm-eval, our tasks) on the real kernels and on emulated weights."""
    real, emulated = real_and_emulated_metrics(target, micro_world / "data", name)
    assert real == emulated


def test_code_schemes_are_the_codes_the_precisions_hold(
    fp8: tuple[nn.Module, dict], hqq4: tuple[nn.Module, dict], fp32: nn.Module
) -> None:
    for name, module in block_linears(fp8[0]).items():
        weight = fp32.get_submodule(name).weight
        assert torch.equal(codes(weight, "fp8-e4m3"), module.weight.qdata.float().flatten())
    for name, module in block_linears(hqq4[0]).items():
        weight = fp32.get_submodule(name).weight
        assert torch.equal(codes(weight, "hqq-w4g64"), hqq_reference(module)[0].flatten())


def test_changed_codes_between_two_checkpoints(
    fp8: tuple[nn.Module, dict],
    hqq4: tuple[nn.Module, dict],
    fp32: nn.Module,
    micro_world: Path,
) -> None:
    """The target against the retrained model: the fraction of codes that differ equals the
    fraction computed from the two models each precision really quantized."""
    retrain = micro_world / "models" / "retrain"
    other = {
        "fp8-e4m3": load_causal_lm(str(retrain), precision="fp8-e4m3")[0],
        "hqq-w4g64": load_causal_lm(str(retrain), precision="hqq-w4g64")[0],
    }
    reference = AutoModelForCausalLM.from_pretrained(retrain, dtype=torch.float32)
    names = list(block_linears(fp32))
    before = {n: fp32.get_submodule(n).weight for n in names}
    after = {n: reference.get_submodule(n).weight for n in names}
    record = code_change_record(before, after)  # what unlearn.json writes
    assert {"nf4", "rtn-w4g64", "hqq-w4g64", "fp8-e4m3"} <= set(record)

    def held(model: nn.Module, name: str, scheme: str) -> torch.Tensor:
        module = model.get_submodule(name)
        return module.weight.qdata.float() if scheme == "fp8-e4m3" else hqq_reference(module)[0]

    for scheme, mine in (("fp8-e4m3", fp8[0]), ("hqq-w4g64", hqq4[0])):
        diff = sum(
            int((held(mine, n, scheme) != held(other[scheme], n, scheme)).sum()) for n in names
        )
        total = sum(before[n].numel() for n in names)
        assert 0 < diff and record[scheme]["overall"] == round(diff / total, 6), scheme
    same = {**before, "zero": torch.zeros(8, 64)}  # an all-zero row has no NaN code
    unchanged = changed_codes(same, same, ("fp8-e4m3", "hqq-w4g64"))
    assert unchanged["fp8-e4m3"]["overall"] == unchanged["hqq-w4g64"]["overall"] == 0.0


# --------------------------------------------------------------------------- names


def test_names_bits_and_order() -> None:
    assert {"fp8-e4m3", "hqq-w{bits}g{group}"} <= set(known_precisions())
    assert resolve_precision("hqq-w3g32").params == {"bits": 3, "group_size": 32}
    assert (bits_of("fp8-e4m3"), bits_of("hqq-w4g64"), bits_of("awq-w4g128")) == (8, 4, 4)
    names = ["nf4", "hqq-w4g64", "int8", "fp8-e4m3", "fp32", "hqq-w2g32", "bf16"]
    assert sorted(names, key=precision_order) == [
        "fp32", "bf16", "fp8-e4m3", "int8", "hqq-w4g64", "nf4", "hqq-w2g32",
    ]  # fmt: skip
