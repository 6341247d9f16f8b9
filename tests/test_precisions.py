"""The precision registry: quantization really happens, emulated mode is the library's own
dequantization, and bad input is a one-line error.

Every model is the micro toy world's target. Checks per precision: module types; at most 16
distinct values per quantization group for 4-bit; dequantized weights within one quantization
step of float32 (GPTQ: on its grid and within 2 steps, see ``test_gptq_is_on_its_grid``); RTN
equal to a few-line torch reference; emulated weights bit-equal to the library's dequantization;
MUSE metrics of emulated and real kernels within 0.5 points.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from muse_run import one_line, real_and_emulated_metrics
from torch import nn
from transformers import AutoModelForCausalLM

from harness_ext.errors import MuseQuantError
from model_wrappers.loading import load_causal_lm
from model_wrappers.precisions import known_precisions, resolve_precision

BLOCK_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@pytest.fixture(scope="module")
def fp32(target: Path) -> nn.Module:
    return AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32)


def n_block_linears(model_dir: Path) -> int:
    """How many block linear layers the checkpoint has (7 per decoder layer)."""
    from transformers import AutoConfig

    return len(BLOCK_LINEARS) * AutoConfig.from_pretrained(model_dir).num_hidden_layers


def block_linears(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if n.rsplit(".", 1)[-1] in BLOCK_LINEARS}


# --------------------------------------------------------------------------- the registry


def test_names_parse_by_pattern() -> None:
    gptq = resolve_precision("gptq-w3g64", {"sym": "false"})
    assert (gptq.params, gptq.options["sym"], gptq.family.name) == (
        {"bits": 3, "group_size": 64},
        False,
        "gptqmodel",
    )
    nf4 = resolve_precision("nf4", {"double_quant": "true", "compute_dtype": "bf16"})
    assert nf4.options == {"double_quant": True, "compute_dtype": "bfloat16"}
    assert {"fp32", "bf16", "fp16", "int8", "nf4", "fp4"} <= set(known_precisions())


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("int3", {}, "unknown precision 'int3' (did you mean 'int8'?); known: fp32, bf16"),
        ("nf4", {"blocksize": "32"}, "unknown option(s) blocksize"),
        ("nf4", {"double_quant": "maybe"}, "double_quant=maybe: expected true or false"),
        ("gptq-w4g128", {"compute_dtype": "int8"}, "compute_dtype=int8: expected one of"),
        ("int8", {"emulated": True}, "emulated=true cannot reproduce it (LLM.int8 also"),
        ("fp4", {"emulated": True, "compute_dtype": "bf16"}, "emulated=true runs dense float32"),
    ],
)
def test_bad_precision_is_one_line(name: str, options: dict, message: str) -> None:
    options = dict(options)
    emulated = options.pop("emulated", False)
    with pytest.raises(MuseQuantError) as err:
        resolve_precision(name, options, emulated)
    assert message in one_line(err)


def test_full_precisions(target: Path) -> None:
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        model, prov = load_causal_lm(str(target), precision=name)
        assert {p.dtype for p in model.parameters()} == {dtype}
        assert prov["precision"]["name"] == name


# --------------------------------------------------------------------------- bitsandbytes


@pytest.mark.parametrize("name", ["nf4", "fp4"])
def test_bnb_4bit_is_really_quantized(name: str, target: Path, fp32: nn.Module) -> None:
    import bitsandbytes as bnb

    model, prov = load_causal_lm(str(target), precision=name)
    assert prov["precision"]["library_config"]["quantization_config"]["bnb_4bit_quant_type"] == name
    assert type(model.lm_head) is nn.Linear and model.lm_head.weight.dtype == torch.float32
    layers = block_linears(model)
    assert len(layers) == n_block_linears(target)
    assert all(isinstance(m, bnb.nn.Linear4bit) for m in layers.values())
    gap = max(torch.diff(layers["model.layers.0.mlp.up_proj"].weight.quant_state.code.sort()[0]))
    for layer_name, module in layers.items():
        state = module.weight.quant_state
        assert state.quant_type == name and module.weight.dtype == torch.uint8
        dense = bnb.functional.dequantize_4bit(module.weight.data, state)
        blocks = dense.reshape(-1, state.blocksize)
        assert max(len(torch.unique(b)) for b in blocks) <= 16
        original = fp32.get_submodule(layer_name).weight.reshape(-1, state.blocksize)
        step = state.absmax[:, None] * gap  # the widest gap between two levels, per block
        assert ((blocks - original).abs() <= step).all()
        assert not torch.equal(blocks, original)


def test_int8_is_really_quantized(target: Path, fp32: nn.Module) -> None:
    import bitsandbytes as bnb

    model, _ = load_causal_lm(str(target), precision="int8")
    for layer_name, module in block_linears(model).items():
        assert isinstance(module, bnb.nn.Linear8bitLt) and module.weight.dtype == torch.int8
        dense = bnb.functional.int8_vectorwise_dequant(module.weight.data, module.weight.SCB)
        step = module.weight.SCB[:, None] / 127
        assert ((dense - fp32.get_submodule(layer_name).weight).abs() <= step).all()


# --------------------------------------------------------------------------- RTN (torchao)


def rtn_reference(w: torch.Tensor, bits: int, group: int, sym: bool) -> torch.Tensor:
    """Round-to-nearest per group of ``group`` inputs, torchao's conventions (int range
    [-2^(b-1), 2^(b-1)-1], multiply by 1/scale, round half to even)."""
    qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    g = w.reshape(w.shape[0], -1, group)
    lo = g.amin(-1, keepdim=True).clamp(max=0)
    hi = g.amax(-1, keepdim=True).clamp(min=0)
    if sym:
        scale = torch.maximum(-lo, hi) / ((qmax - qmin) / 2)
        zero = torch.zeros_like(scale)
    else:
        scale = (hi - lo) / (qmax - qmin)
        zero = (qmin - torch.round(lo / scale)).clamp(qmin, qmax)
    q = (torch.round(g * (1.0 / scale)) + zero).clamp(qmin, qmax)
    return ((q - zero) * scale).reshape(w.shape)


@pytest.mark.parametrize(("bits", "group", "sym"), [(4, 128, True), (4, 64, False), (3, 32, True)])
def test_rtn_matches_torch_reference(
    bits: int, group: int, sym: bool, target: Path, fp32: nn.Module
) -> None:
    from torchao.utils import TorchAOBaseTensor

    name = f"rtn-w{bits}g{group}"
    model, _ = load_causal_lm(str(target), precision=name, sym=str(sym))
    assert not isinstance(model.lm_head.weight, TorchAOBaseTensor)
    for layer_name, module in block_linears(model).items():
        assert isinstance(module.weight, TorchAOBaseTensor)
        dense = module.weight.dequantize()
        original = fp32.get_submodule(layer_name).weight
        assert torch.equal(dense, rtn_reference(original, bits, group, sym))
        assert max(len(torch.unique(g)) for g in dense.reshape(-1, group)) <= 2**bits
        step = module.weight.scale.repeat_interleave(group, dim=1)
        assert ((dense - original).abs() <= step).all()


def test_rtn_group_must_divide_width(target: Path) -> None:
    with pytest.raises(MuseQuantError) as err:
        load_causal_lm(str(target), precision="rtn-w4g96")
    assert "group size 96 does not divide the input width 128" in one_line(err)


# --------------------------------------------------------------------------- GPTQ (gptqmodel)


@pytest.fixture(scope="module")
def gptq(target: Path) -> tuple[nn.Module, dict]:
    pytest.importorskip("gptqmodel", reason="pip install 'muse-quant[gptq]' to test GPTQ")
    return load_causal_lm(str(target), precision="gptq-w4g128")


def test_gptq_is_on_its_grid(gptq: tuple[nn.Module, dict], fp32: nn.Module) -> None:
    """Every weight is scale * (q - zero) with q in [0, 15] for its group of 128 inputs. GPTQ
    moves not-yet-quantized columns to compensate earlier rounding, so a weight can land more
    than one step from float32 (up to ~1.6 here); on average it stays within half a step."""
    from gptqmodel.nn_modules.qlinear import BaseQuantLinear

    model, prov = gptq
    assert prov["precision"]["library_config"]["quantize_config"]["bits"] == 4
    for layer_name, module in block_linears(model).items():
        assert isinstance(module, BaseQuantLinear)
        dense = module.dequantize_weight().T.float()
        step = module.scales.float()[module.g_idx.long()].T  # [out, in]
        assert all(len(torch.unique(g)) <= 16 for g in dense.reshape(-1, 128))
        error = (dense - fp32.get_submodule(layer_name).weight).abs() / step
        assert error.mean() < 0.5 and error.max() < 2.0


def test_gptq_calibration_defaults_to_generic_text(
    gptq: tuple[nn.Module, dict], micro_world: Path
) -> None:
    import hashlib

    calibration = gptq[1]["precision"]["calibration"]
    generic = json.loads((micro_world / "pretrain" / "generic.json").read_text())
    forget = json.loads((micro_world / "data" / "raw" / "forget.json").read_text())
    forget_texts = [t if isinstance(t, str) else t["text"] for t in forget]
    assert calibration["source"].startswith(str(micro_world / "pretrain" / "generic.json"))
    assert calibration["sha256"] == hashlib.sha256(json.dumps(generic).encode()).hexdigest()
    assert not any(g in f or f in g for g in generic for f in forget_texts)


def test_gptq_refuses_forget_text(target: Path, micro_world: Path) -> None:
    forget = micro_world / "data" / "raw" / "forget.json"
    with pytest.raises(MuseQuantError) as err:
        load_causal_lm(str(target), precision="gptq-w4g128", calibration=str(forget))
    assert "forget or evaluation text" in one_line(err)


def test_gptq_without_gptqmodel(target: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gptqmodel", None)  # import gptqmodel -> ImportError
    with pytest.raises(MuseQuantError) as err:
        load_causal_lm(str(target), precision="gptq-w4g128")
    assert "pip install 'muse-quant[gptq]'" in one_line(err)


def test_gptqmodel_prints_on_stderr_and_leaves_no_logs(target: Path, tmp_path: Path) -> None:
    """A fresh process quantizing with GPTQ and AWQ: gptqmodel's banner and per-layer tables are
    on stderr (stdout holds only what the program prints), and its per-layer log files are gone
    (not in the cache, the working folder or the temporary folder)."""
    pytest.importorskip("gptqmodel", reason="pip install 'muse-quant[gptq]' to test GPTQ")
    folders = {name: tmp_path / name for name in ("cache", "cwd", "tmp")}
    for folder in folders.values():
        folder.mkdir()
    code = (
        "from model_wrappers.loading import load_causal_lm\n"
        f"for name in ('gptq-w4g128', 'awq-w4g128'): load_causal_lm({str(target)!r}, "
        "precision=name)\n"
        "print('loaded')\n"
    )
    env = {
        **os.environ, "MUSE_QUANT_CACHE": str(folders["cache"]), "TMPDIR": str(folders["tmp"])
    }
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=folders["cwd"], env=env, capture_output=True,
        text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == "loaded\n"
    assert "GPT-QModel" in done.stderr  # its banner, on stderr
    assert list(folders["tmp"].iterdir()) == []
    assert list(tmp_path.rglob("*.log")) == []
    assert (folders["cache"] / "quantized").is_dir()


def test_gpu_only_kernel_on_cpu(target: Path) -> None:
    pytest.importorskip("gptqmodel", reason="pip install 'muse-quant[gptq]' to test GPTQ")
    with pytest.raises(MuseQuantError) as err:
        load_causal_lm(str(target), precision="gptq-w4g128", backend="marlin")
    assert "marlin kernel runs on CUDA only" in one_line(err)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a CPU-only machine")
def test_cuda_device_without_cuda(target: Path) -> None:
    with pytest.raises(MuseQuantError) as err:
        load_causal_lm(str(target), precision="nf4", device="cuda")
    assert "no CUDA device here" in one_line(err)


# --------------------------------------------------------------------------- emulated mode


def library_dequantized(name: str, target: Path) -> dict[str, torch.Tensor]:
    """Each quantized layer's weight as the library itself dequantizes it."""
    model, _ = load_causal_lm(str(target), precision=name)
    if name in ("nf4", "fp4"):  # transformers' own dequantize() for bitsandbytes
        model = model.dequantize(dtype=torch.float32)
        return {n: m.weight for n, m in block_linears(model).items()}
    if name.startswith("gptq"):
        return {n: m.dequantize_weight().T for n, m in block_linears(model).items()}
    return {n: m.weight.dequantize() for n, m in block_linears(model).items()}


@pytest.mark.parametrize("name", ["nf4", "fp4", "rtn-w4g128", "gptq-w4g128"])
def test_emulated_weights_are_the_library_dequantization(name: str, target: Path) -> None:
    if name.startswith("gptq"):
        pytest.importorskip("gptqmodel", reason="pip install 'muse-quant[gptq]' to test GPTQ")
    model, prov = load_causal_lm(str(target), precision=name, emulated=True)
    assert (
        prov["precision"]["emulated"]
        and prov["precision"]["library_config"]["emulated_modules"] == n_block_linears(target)
    )
    expected = library_dequantized(name, target)
    for layer_name, module in block_linears(model).items():
        assert type(module) is nn.Linear and module.weight.dtype == torch.float32
        assert torch.equal(module.weight, expected[layer_name].float()), layer_name
    assert not getattr(model, "is_quantized", False)


@pytest.mark.parametrize("name", ["nf4", "fp4", "gptq-w4g128"])
def test_emulated_metrics_match_real_kernels(name: str, target: Path, micro_world: Path) -> None:
    """The MUSE suite (lm-eval, our tasks) on the real kernels and on emulated weights."""
    if name.startswith("gptq"):
        pytest.importorskip("gptqmodel", reason="pip install 'muse-quant[gptq]' to test GPTQ")
    real, emulated = real_and_emulated_metrics(target, micro_world / "data", name)
    for key in ("verbmem_f", "knowmem_f", "knowmem_r"):
        assert abs(real[key] - emulated[key]) <= 0.5, (key, real[key], emulated[key])
    assert abs(real["privleak"] - emulated["privleak"]) <= 0.5


def test_the_board_reads_each_backend_s_bits_from_its_names() -> None:
    """The board reads a precision's bits from its name (``harness_ext.precision_names``: it
    imports no backend); every registered precision's own bits agree with that reading."""
    from harness_ext.precision_names import bits_of

    names = [n.format(bits=b, group=64) for n in known_precisions() for b in (3, 4, 8)]
    for name in dict.fromkeys(names):
        assert bits_of(name) == resolve_precision(name).bits, name
