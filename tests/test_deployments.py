"""Deployments beyond quantization: pruning (magnitude, N of M, Wanda) and relearning, named like
precisions and composable with them (``wanda-50+nf4``), on the micro toy world.

Masks are checked against computations written here (sorting by hand, Wanda's score from the
model's own hidden states), the composition against NF4's dequantized weights, relearning's slice
against the scored texts read independently, and bad names and options as one-line refusals.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
from muse_run import block_linears, one_line, refused_on_the_command_line
from transformers import AutoModelForCausalLM, AutoTokenizer

from harness_ext.errors import MuseQuantError
from harness_ext.precision_names import bits_of, split_deployment
from model_wrappers.calibration import resolve_calibration
from model_wrappers.loading import load_causal_lm
from model_wrappers.precisions import resolve_precision
from model_wrappers.precisions.pruning import magnitude_mask, n_of_m_mask, row_mask
from model_wrappers.precisions.relearning import relearning_slice, scored_documents


def test_masks_equal_a_hand_computation() -> None:
    score = torch.tensor([[0.5, -3.0, 2.0, 0.1], [4.0, 1.0, 0.2, 3.0]]).abs()
    # 50% of the whole tensor: the four smallest of 0.5 3 2 .1 4 1 .2 3 are .1 .2 .5 1.
    assert magnitude_mask(score, 0.5).tolist() == [
        [False, True, True, False], [True, False, False, True]
    ]  # fmt: skip
    # 25% of every row: one weight per row, the smallest.
    assert row_mask(score, 0.25).tolist() == [[True, True, True, False], [True, True, False, True]]
    # keep 1 of every 2: the larger of each pair.
    assert n_of_m_mask(score, 1, 2).tolist() == [
        [False, True, True, False], [True, False, False, True]
    ]  # fmt: skip


@pytest.fixture(scope="module")
def pruned(target: Path) -> dict[str, tuple]:
    return {name: load_causal_lm(str(target), name) for name in ("magnitude-50", "magnitude-2of4")}


def test_magnitude_sparsity_per_layer_is_the_one_asked(pruned, target: Path) -> None:
    original = block_linears(AutoModelForCausalLM.from_pretrained(str(target)))
    model, provenance = pruned["magnitude-50"]
    (record,) = provenance["deployment"]
    for name, linear in block_linears(model).items():
        weight = linear.weight.detach()
        assert float((weight == 0).float().mean()) == 0.5
        kept = original[name].weight.detach().abs()[weight != 0]
        dropped = original[name].weight.detach().abs()[weight == 0]
        assert kept.min() >= dropped.max()  # the largest half is the half kept
        assert record["sparsity_per_layer"][name.removeprefix("model.")] == 0.5
    assert record["sparsity"] == 0.5 and record["method"] == "magnitude"
    assert provenance["precision"]["deployments"][0]["name"] == "magnitude-50"


def test_two_of_four_masks_have_two_zeros_in_every_group_of_four(pruned) -> None:
    model, _ = pruned["magnitude-2of4"]
    for linear in block_linears(model).values():
        groups = linear.weight.detach().reshape(linear.out_features, -1, 4)
        assert ((groups == 0).sum(-1) == 2).all()


def test_wanda_mask_equals_a_hand_computation_and_survives_nf4(target: Path) -> None:
    """Block 0's q_proj sees the input layer norm of the embeddings: its input norms come from
    the model's own hidden states, and every row prunes the half of lowest |W| * ||X||."""
    model = AutoModelForCausalLM.from_pretrained(str(target))
    tokenizer = AutoTokenizer.from_pretrained(str(target))
    texts = resolve_calibration(None, target).texts[:256]
    squares = torch.zeros(model.config.hidden_size, dtype=torch.float64)
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([tokenizer(text)["input_ids"]])
            embedded = model(input_ids=ids, output_hidden_states=True).hidden_states[0]
            normed = model.model.layers[0].input_layernorm(embedded)
            squares += normed.double().pow(2).sum((0, 1))
    weight = model.model.layers[0].self_attn.q_proj.weight.detach()
    score = weight.abs() * squares.sqrt().float()
    expected = torch.zeros_like(weight, dtype=torch.bool)
    for row in range(weight.shape[0]):
        order = sorted(range(weight.shape[1]), key=lambda j: (score[row, j].item(), j))
        expected[row, order[weight.shape[1] // 2 :]] = True

    wanda, provenance = load_causal_lm(str(target), "wanda-50")
    q_proj = wanda.model.layers[0].self_attn.q_proj.weight.detach()
    assert ((q_proj != 0) == expected).all()
    assert provenance["deployment"][0]["calibration_texts"] == len(texts)
    assert provenance["precision"]["calibration"]["n_texts"] == len(texts)

    import bitsandbytes.functional as bnbf

    quantized, _ = load_causal_lm(str(target), "wanda-50+nf4")
    for name, linear in block_linears(quantized).items():
        dense = bnbf.dequantize_4bit(linear.weight.data, linear.weight.quant_state)
        pruned_weight = dict(block_linears(wanda))[name].weight.detach()
        assert (dense[pruned_weight == 0] == 0).all()  # NF4 has an exact zero level


def test_names_split_into_steps_and_a_precision() -> None:
    assert split_deployment("wanda-50+nf4") == (("wanda-50",), "nf4")
    assert split_deployment("relearn-retain-k5") == (("relearn-retain-k5",), "fp32")
    assert split_deployment("magnitude-2of4+relearn-retain-k5+gguf-q4_k_m") == (
        ("magnitude-2of4", "relearn-retain-k5"), "gguf-q4_k_m"
    )  # fmt: skip
    assert split_deployment("gptq-w4g128") == ((), "gptq-w4g128")
    for name in ("wanda-50+nf4", "magnitude-2of4+gptq-w4g128", "wanda-50", "relearn-forget-k10"):
        precision = resolve_precision(name)
        assert bits_of(name) == precision.bits
        assert precision.name == name and precision.quantization == split_deployment(name)[1]
    assert resolve_precision("wanda-50+nf4").calibrated
    assert not resolve_precision("magnitude-50+nf4").calibrated


@pytest.mark.parametrize(
    ("precision", "message"),
    [
        ("wanda-0", "sparsity 0%: give a percentage from 1 to 99"),
        ("magnitude-4of4", "keep between 1 and 3 weights of every 4"),
        ("wandaa-50+nf4", "did you mean 'wanda-50'"),
        ("relearn-retain-k0", "k0 trains nothing"),
        ("wanda-50+nf5", "did you mean 'nf4'"),
        ("relearn-retain-k5,relearn_lr=-1", "relearn_lr=-1.0: expected a positive number"),
        ("relearn-retain-k5,relearn_share=2", "relearn_share=2: expected a number between 0"),
        ("relearn-retain-k5,relearn_data=/no/such", "relearn_data=/no/such: not a folder"),
        ("magnitude-50,relearn_lr=1", "unknown option(s) relearn_lr"),
        # Every forget document of the toy world holds scored text.
        ("relearn-forget-k5", "only 0 hold no scored text; relearn on retain"),
    ],
)
def test_bad_deployments_are_refused_in_one_line(
    micro_world: Path, tmp_path: Path, capsys, monkeypatch, precision: str, message: str
) -> None:
    monkeypatch.setenv("MUSE_QUANT_CACHE", str(tmp_path / "cache"))
    assert message in refused_on_the_command_line(micro_world, tmp_path, capsys, precision)


@pytest.fixture(scope="module")
def data_with_unscored(micro_world: Path, tmp_path_factory) -> Path:
    """The micro world's data with 20 forget documents no task scores appended."""
    data = tmp_path_factory.mktemp("muse") / "data"
    shutil.copytree(micro_world / "data", data)
    forget = json.loads((data / "raw" / "forget.json").read_text())
    extra = [f"Unscored note {i}: the lantern guild of Zet met {i + 3} times." for i in range(20)]
    (data / "raw" / "forget.json").write_text(json.dumps(forget + extra))
    return data


def test_relearning_slice_holds_no_scored_document(data_with_unscored: Path) -> None:
    forget = [r for r in json.loads((data_with_unscored / "raw" / "forget.json").read_text())]
    scored_texts = [r["prompt"] for r in _read(data_with_unscored, "verbmem/forget")]
    scored_texts += [r["question"] for r in _read(data_with_unscored, "knowmem/forget_qa")]
    scored_texts += _read(data_with_unscored, "privleak/forget")
    independently = {i for i, doc in enumerate(forget) if any(t in doc for t in scored_texts)}
    assert scored_documents(data_with_unscored) == independently
    assert len(independently) == len(forget) - 20
    for seed in range(5):
        chosen = relearning_slice(data_with_unscored, "forget", 0.05, seed)
        assert len(chosen) == 3 and not set(chosen) & independently  # 5% of 60 documents
    assert relearning_slice(data_with_unscored, "forget", 0.05, 1) == relearning_slice(
        data_with_unscored, "forget", 0.05, 1
    )


def _read(data: Path, split: str) -> list:
    return json.loads((data / f"{split}.json").read_text())


def test_relearning_trains_its_slice_and_is_cached(
    target: Path, data_with_unscored: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("MUSE_QUANT_CACHE", str(tmp_path / "cache"))
    args = {"relearn_data": str(data_with_unscored), "relearn_lr": 1e-3}
    model, provenance = load_causal_lm(str(target), "relearn-forget-k3", **args)
    (record,) = provenance["deployment"]
    assert not set(record["documents"]) & set(record["scored_excluded"])
    assert record["steps"] == 3 and record["cache"]["hit"] is False
    original = AutoModelForCausalLM.from_pretrained(str(target))
    moved = [
        not torch.equal(a, b)
        for a, b in zip(original.parameters(), model.parameters(), strict=True)
    ]
    assert all(moved)
    again, provenance = load_causal_lm(str(target), "relearn-forget-k3", **args)
    assert provenance["deployment"][0]["cache"]["hit"] is True
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_a_resolved_deployment_refuses_a_folder_it_cannot_use(tmp_path: Path) -> None:
    precision = resolve_precision("relearn-retain-k2")
    (step,) = precision.deployments
    with pytest.raises(MuseQuantError) as error:
        step.check_folder(step, tmp_path)
    assert "give relearn_data=<MUSE data folder>" in one_line(error)


def test_steps_leave_a_held_checkpoint_as_it_was(target: Path) -> None:
    """A sweep holds each checkpoint's float32 weights for all its precisions: pruning one
    deployment must not prune the next precision's weights."""
    from model_wrappers.opening import reusing_checkpoints

    original = AutoModelForCausalLM.from_pretrained(str(target)).state_dict()
    with reusing_checkpoints():
        first, _ = load_causal_lm(str(target), "fp32")
        pruned, _ = load_causal_lm(str(target), "magnitude-50")
        after, _ = load_causal_lm(str(target), "fp32")
    for model in (first, after):
        for name, tensor in model.state_dict().items():
            assert torch.equal(tensor, original[name]), name
    assert any((p == 0).float().mean() == 0.5 for p in pruned.parameters())


@pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None, reason="pip install 'muse-quant[gguf]'"
)
def test_llama_cpp_runs_the_deployed_weights_and_records_them(
    target: Path, tmp_path: Path, monkeypatch
) -> None:
    """``magnitude-50+gguf-q8_0``: llama.cpp's file is written from the pruned weights (its own
    cache entry, not plain q8_0's), and a cached file still gets the pruning's record."""
    from model_wrappers.muse_model import build
    from model_wrappers.request import read_request

    monkeypatch.setenv("MUSE_QUANT_CACHE", str(tmp_path / "cache"))
    runs = {}
    for name in ("gguf-q8_0", "magnitude-50+gguf-q8_0", "magnitude-50+gguf-q8_0"):
        model = build(read_request({"pretrained": str(target), "precision": name}))
        runs.setdefault(name, []).append(model.provenance)
    plain, (first, cached) = runs["gguf-q8_0"][0], runs["magnitude-50+gguf-q8_0"]
    library = [p["precision"]["library_config"] for p in (plain, first, cached)]
    assert library[0]["file_sha256"] != library[1]["file_sha256"] == library[2]["file_sha256"]
    assert (library[1]["cache"]["hit"], library[2]["cache"]["hit"]) == (False, True)
    assert first["deployment"] == cached["deployment"]
    assert first["deployment"][0]["sparsity"] == 0.5
