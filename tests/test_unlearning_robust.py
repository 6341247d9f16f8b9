"""The methods made to survive quantization, on the micro toy world: SURE's module selection
against saliency computed here by hand, and quantization-aware runs that really train through
NF4 (forward on the rounded weights, gradient straight through) and whose NF4 model forgot."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from harness_ext.errors import MuseQuantError
from model_wrappers.batching import pad_batch
from model_wrappers.loading import load_causal_lm
from model_wrappers.precisions import quantized_linear_names
from muse_quant.cli import main
from muse_quant.unlearning.config import UnlearnConfig
from muse_quant.unlearning.data import load_forget_retain
from muse_quant.unlearning.losses import mean_nll
from muse_quant.unlearning.quant_aware import nf4_round_trip, through_nf4
from muse_quant.unlearning.recipe import unlearn

QUICK = {"method": "ga", "retain_loss": "gdr", "max_steps": 6, "lr": 3e-3, "param_dtype": "fp32"}
FRACTION = 0.25


def fp32_model(path: Path) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def forget_set(target: Path, micro_world: Path) -> tuple[list[list[int]], int]:
    tokenizer = AutoTokenizer.from_pretrained(target)
    data = load_forget_retain(micro_world / "data", tokenizer, ("retain1",), 512, seed=0)
    return data.forget, tokenizer.pad_token_id


def forget_nll(model: torch.nn.Module, target: Path, micro_world: Path) -> float:
    chunks, pad = forget_set(target, micro_world)
    with torch.no_grad():
        return mean_nll(model, pad_batch(chunks, pad)).item()


@pytest.fixture(scope="module")
def sure_run(target: Path, micro_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = UnlearnConfig(**QUICK, salient_fraction=FRACTION)
    out = tmp_path_factory.mktemp("runs") / "ga_gdr_full_sure"
    return unlearn(target, micro_world / "data", config, out, progress=False)


@pytest.fixture(scope="module")
def aware_run(target: Path, micro_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = UnlearnConfig(**QUICK, quant_aware="nf4")
    out = tmp_path_factory.mktemp("runs") / "ga_gdr_full_qa"
    return unlearn(target, micro_world / "data", config, out, progress=False)


# --------------------------------------------------------------------------- SURE


def test_sure_saliency_is_the_forget_gradient_norm_of_each_module(
    sure_run: Path, target: Path, micro_world: Path
) -> None:
    """The recorded saliency equals ||d(-NLL on the forget set, batch by batch)/dW|| computed
    here, and the selected modules are the top quarter of it."""
    record = json.loads((sure_run / "unlearn.json").read_text())
    assert record["method"] == "GA+GDR+SURE"
    model = fp32_model(target)
    chunks, pad = forget_set(target, micro_world)
    size = QUICK.get("batch_size", UnlearnConfig().batch_size)
    for start in range(0, len(chunks), size):
        (-mean_nll(model, pad_batch(chunks[start : start + size], pad))).backward()
    names = quantized_linear_names(model)
    expected = {n: model.get_submodule(n).weight.grad.norm().item() for n in names}
    recorded = record["salient_modules"]["saliency"]
    assert set(recorded) == set(names)
    for name in names:
        assert recorded[name] == pytest.approx(expected[name], rel=1e-4, abs=1e-6), name
    top = sorted(names, key=lambda n: -expected[n])[: math.ceil(FRACTION * len(names))]
    assert record["salient_modules"]["selected"] == top
    assert record["salient_modules"]["threshold"] == pytest.approx(expected[top[-1]], rel=1e-4)


def test_sure_changes_only_the_selected_modules_and_forgets(
    sure_run: Path, target: Path, micro_world: Path
) -> None:
    selected = json.loads((sure_run / "unlearn.json").read_text())["salient_modules"]["selected"]
    before, after = fp32_model(target), fp32_model(sure_run)
    trained = {f"{name}.weight" for name in selected}
    after_params = dict(after.named_parameters())
    for name, w0 in before.named_parameters():
        if name in trained:
            assert not torch.equal(w0, after_params[name]), name
        else:
            assert torch.equal(w0, after_params[name]), name  # bit-identical to the target
    assert forget_nll(after, target, micro_world) > forget_nll(before, target, micro_world) + 0.3


# --------------------------------------------------------------------------- quantization-aware


def test_through_nf4_computes_on_the_rounded_weights_with_straight_through_gradients(
    target: Path, micro_world: Path
) -> None:
    chunks, pad = forget_set(target, micro_world)
    batch = pad_batch(chunks[:3], pad)
    aware, rounded = fp32_model(target), fp32_model(target)
    names = quantized_linear_names(aware)
    with torch.no_grad():  # the model an NF4 deployment runs: each block linear dequantized
        for name in names:
            weight = rounded.get_submodule(name).weight
            weight.copy_(nf4_round_trip(weight))
    originals = {name: aware.get_submodule(name).weight for name in names}
    with through_nf4(aware, names):
        loss = mean_nll(aware, batch)
        loss.backward()
    expected = mean_nll(rounded, batch)
    expected.backward()
    assert loss.item() == expected.item()
    for name in names:
        w = aware.get_submodule(name).weight
        assert w is originals[name]  # the optimizer's parameter, unrounded again
        assert torch.equal(w.grad, rounded.get_submodule(name).weight.grad), name
    assert not torch.equal(originals[names[0]], rounded.get_submodule(names[0]).weight)
    # the Trainer's fused AdamW updates the weight in place without moving its version counter:
    # the next forward must still round the new weight
    layer, weight = aware.get_submodule(names[0]), originals[names[0]]
    optimizer = torch.optim.AdamW([weight], lr=0.5, fused=True)
    with through_nf4(aware, names[:1]):
        first, version = layer.weight.clone(), weight._version
        weight.grad = torch.ones_like(weight)
        optimizer.step()
        assert weight._version == version  # what made a version-keyed cache go stale
        assert torch.equal(layer.weight, nf4_round_trip(weight))
        assert not torch.equal(layer.weight, first)


def test_quant_aware_run_saves_full_precision_weights_whose_nf4_model_forgot(
    aware_run: Path, target: Path, micro_world: Path
) -> None:
    record = json.loads((aware_run / "unlearn.json").read_text())
    assert record["method"] == "GA+GDR+QA-NF4" and record["config"]["quant_aware"] == "nf4"
    saved = fp32_model(aware_run)
    name = quantized_linear_names(saved)[0]
    weight = saved.get_submodule(name).weight
    assert not torch.equal(weight, nf4_round_trip(weight))  # latent weights, not their rounding
    nf4_target, _ = load_causal_lm(str(target), precision="nf4")
    nf4_run, _ = load_causal_lm(str(aware_run), precision="nf4")
    before = forget_nll(nf4_target, target, micro_world)
    assert forget_nll(nf4_run, target, micro_world) > before + 0.3


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"salient_fraction": 0.0}, "salient-fraction 0.0: must be in (0, 1] (a fraction of"),
        ({"salient_fraction": 1.5}, "salient-fraction 1.5: must be in (0, 1] (a fraction of"),
        ({"quant_aware": "int3"}, "unknown quant-aware scheme 'int3'; choose one of nf4"),
        ({"mode": "lora", "salient_fraction": 0.5}, "--salient-fraction is for --mode full"),
        ({"mode": "lora", "quant_aware": "nf4"}, "--quant-aware is for --mode full"),
    ],
)
def test_bad_robust_options_are_refused(change: dict, message: str) -> None:
    with pytest.raises(MuseQuantError, match=re.escape(message)):
        UnlearnConfig(**change)


def test_cli_takes_the_robust_options(
    target: Path, micro_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    args = ["unlearn", "--model", str(target), "--data", str(micro_world / "data"), "--method",
            "ga", "--max-steps", "1", "--param-dtype", "fp32", "--out", str(out)]  # fmt: skip
    with pytest.raises(SystemExit) as refused:
        main([*args, "--quant-aware", "nf5"])
    assert refused.value.code == 2
    assert "invalid choice: 'nf5'" in capsys.readouterr().err and not out.exists()
    assert main([*args, "--salient-fraction", "0.5", "--quant-aware", "nf4"]) == 0
    config = json.loads((out / "unlearn.json").read_text())["config"]
    assert (config["salient_fraction"], config["quant_aware"]) == (0.5, "nf4")
