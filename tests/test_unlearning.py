"""Unlearning recipes on the micro toy world: the losses against hand computations, full and LoRA
runs that really raise the forget loss, what they save and record, and every refusal."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from harness_ext.errors import MuseQuantError
from model_wrappers.batching import pad_batch
from model_wrappers.codes import changed_codes, codes, confine_to_nf4_bins
from model_wrappers.loading import load_causal_lm
from model_wrappers.precisions.bitsandbytes import nf4_codes
from muse_quant.cli import main
from muse_quant.unlearning.config import UnlearnConfig
from muse_quant.unlearning.data import load_forget_retain
from muse_quant.unlearning.losses import mean_nll, npo_loss, retain_kl, sequence_logprob
from muse_quant.unlearning.pool import unlearn_all
from muse_quant.unlearning.recipe import unlearn

QUICK = {"max_steps": 6, "lr": 3e-3, "param_dtype": "fp32"}


@pytest.fixture(scope="module")
def tokenizer(target: Path):
    return AutoTokenizer.from_pretrained(target)


@pytest.fixture(scope="module")
def batches(micro_world: Path, tokenizer) -> dict[str, dict[str, torch.Tensor]]:
    data = load_forget_retain(micro_world / "data", tokenizer, ("retain1",), 512, seed=0)
    return {
        "forget": pad_batch(data.forget[:3], tokenizer.pad_token_id),
        "retain": pad_batch(data.retain[:3], tokenizer.pad_token_id),
    }


def fp32_model(path: Path) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def forget_nll(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> float:
    with torch.no_grad():
        return mean_nll(model, batch).item()


# --------------------------------------------------------------------------- losses


def test_mean_nll_is_transformers_own_lm_loss(target: Path, batches) -> None:
    model, batch = fp32_model(target), batches["forget"]
    with torch.no_grad():
        theirs = model(**batch).loss.item()
    assert forget_nll(model, batch) == pytest.approx(theirs, rel=1e-5)


def test_sequence_logprob_sums_each_rows_token_logprobs(target: Path, batches) -> None:
    model, batch = fp32_model(target), batches["forget"]
    with torch.no_grad():
        ours = sequence_logprob(model, batch)
        for row in range(batch["input_ids"].shape[0]):
            n = int(batch["attention_mask"][row].sum())
            ids = batch["input_ids"][row, :n]
            logp = F.log_softmax(model(ids[None]).logits[0, :-1].float(), -1)
            expected = logp[torch.arange(n - 1), ids[1:]].sum()
            assert ours[row].item() == pytest.approx(expected.item(), rel=1e-4)


def test_npo_loss_at_the_reference_is_2_log2_over_beta_and_rises_with_likelihood() -> None:
    logp = torch.tensor([-50.0, -20.0])
    assert npo_loss(logp, logp, beta=0.1).item() == pytest.approx(2 / 0.1 * math.log(2))
    # more likely than the reference = larger loss; less likely = smaller
    assert npo_loss(logp + 5, logp, 0.1) > npo_loss(logp, logp, 0.1) > npo_loss(logp - 5, logp, 0.1)
    by_hand = -(2 / 0.1) * math.log(1 / (1 + math.exp(0.1 * 5)))
    assert npo_loss(logp + 5, logp, 0.1).item() == pytest.approx(by_hand, rel=1e-6)


def test_retain_kl_is_zero_against_itself_and_matches_a_hand_kl(target, micro_world, batches):
    model, batch = fp32_model(target), batches["retain"]
    other = fp32_model(micro_world / "models" / "retrain")
    assert retain_kl(model, model, batch).item() == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        p = F.log_softmax(other(**batch).logits[:, :-1].float(), -1)
        q = F.log_softmax(model(**batch).logits[:, :-1].float(), -1)
        per_token = (p.exp() * (p - q)).sum(-1)
        mask = batch["labels"][:, 1:] != -100
        expected = (per_token * mask).sum() / mask.sum()
    assert retain_kl(model, other, batch).item() == pytest.approx(expected.item(), rel=1e-4)


# --------------------------------------------------------------------------- 4-bit codes


def test_nf4_codes_rebuild_bitsandbytes_dequantization() -> None:
    import bitsandbytes.functional as bnbf

    w = torch.randn(64, 256, generator=torch.Generator().manual_seed(0)) * 0.02
    packed, state = bnbf.quantize_4bit(w, blocksize=64, quant_type="nf4")
    levels = bnbf.get_4bit_type("nf4", device="cpu")
    absmax = w.reshape(-1, 64).abs().amax(1, keepdim=True)
    rebuilt = (levels[nf4_codes(w).long()].reshape(-1, 64) * absmax).reshape(w.shape)
    assert torch.equal(rebuilt, bnbf.dequantize_4bit(packed, state))


def test_rtn_codes_rebuild_torchao_dequantization(target: Path) -> None:
    fp32 = fp32_model(target)
    rtn, _ = load_causal_lm(str(target), precision="rtn-w4g64")
    name = "model.layers.0.mlp.down_proj"
    w = fp32.get_submodule(name).weight
    g = w.detach().reshape(w.shape[0], -1, 64)
    scale = g.abs().amax(-1, keepdim=True) / 7.5
    rebuilt = (codes(w, "rtn-w4g64").reshape(g.shape) * scale).reshape(w.shape)
    assert torch.equal(rebuilt, rtn.get_submodule(name).weight.dequantize())


def test_changed_codes_counts_only_real_crossings() -> None:
    w = torch.randn(64, 128, generator=torch.Generator().manual_seed(1)) * 0.02
    scaled = w * 2  # moves every weight; the scale doubles exactly too: no code changes
    flipped = w.clone()
    flipped[0, :64] *= -1  # sign flips: every non-zero code of that block changes
    report = changed_codes({"w": w}, {"w": scaled})
    assert report["any"]["overall"] == 1.0
    assert report["nf4"]["overall"] == report["rtn-w4g64"]["overall"] == 0.0
    flips = changed_codes({"w": w}, {"w": flipped})
    n_nonzero = int((nf4_codes(w[0, :64]) != 7).sum())
    assert flips["nf4"]["per_layer"]["w"] == pytest.approx(n_nonzero / w.numel())


def test_confining_to_nf4_bins_keeps_the_asked_part_of_the_code_changes() -> None:
    gen = torch.Generator().manual_seed(2)
    before = torch.randn(64, 256, generator=gen) * 0.02
    after = before + torch.randn(64, 256, generator=gen) * 0.004  # moves weights across bins,
    blocks, top = before.view(-1, 64), before.view(-1, 64).abs().argmax(1, keepdim=True)
    limit = blocks.abs().amax(1, keepdim=True) * 0.99  # each block's scale kept: a code changes
    after = torch.maximum(torch.minimum(after.view(-1, 64), limit), -limit)  # only by crossing
    after = after.scatter(1, top, blocks.gather(1, top)).view(before.shape)
    crossed = nf4_codes(before) != nf4_codes(after)
    assert crossed.float().mean() > 0.1
    confined = confine_to_nf4_bins(before, after)
    assert torch.equal(nf4_codes(confined), nf4_codes(before))  # NF4 cannot see the update
    moved = confined != before
    assert moved.float().mean() > 0.5  # yet the weights still move, within their bins
    assert torch.all((confined - before).sign()[moved] == (after - before).sign()[moved])
    kept = confine_to_nf4_bins(before, after, keep=0.5, seed=3)
    same = kept.flatten() == after.flatten()
    assert 0.45 < same[crossed].float().mean() < 0.55  # about half of them, as drawn
    assert torch.equal(kept, confine_to_nf4_bins(before, after, keep=0.5, seed=3))
    with pytest.raises(ValueError, match="keep=1.5"):
        confine_to_nf4_bins(before, after, keep=1.5)


# --------------------------------------------------------------------------- runs


@pytest.fixture(scope="module")
def full_run(target: Path, micro_world: Path, tmp_path_factory) -> Path:
    config = UnlearnConfig(method="ga", retain_loss="gdr", mode="full", **QUICK)
    out = tmp_path_factory.mktemp("runs") / "ga_gdr_full"
    return unlearn(target, micro_world / "data", config, out, progress=False)


@pytest.fixture(scope="module")
def lora_run(target: Path, micro_world: Path, tmp_path_factory) -> Path:
    config = UnlearnConfig(method="npo", retain_loss="klr", mode="lora", max_steps=6, lr=1e-2)
    out = tmp_path_factory.mktemp("runs") / "npo_klr_lora"
    return unlearn(target, micro_world / "data", config, out, progress=False)


def test_full_run_raises_forget_loss_and_saves_a_loadable_checkpoint(
    full_run: Path, target: Path, batches
) -> None:
    before = forget_nll(fp32_model(target), batches["forget"])
    after = forget_nll(fp32_model(full_run), batches["forget"])
    assert after > before + 0.5
    model, provenance = load_causal_lm(str(full_run), precision="nf4")
    assert provenance["precision"]["name"] == "nf4"


def test_unlearn_json_records_config_seed_and_hashes(full_run: Path, target, micro_world) -> None:
    record = json.loads((full_run / "unlearn.json").read_text())
    assert record["method"] == "GA+GDR"
    assert record["config"] == {
        **UnlearnConfig(method="ga", retain_loss="gdr", **QUICK).to_dict(),
        "retain_splits": ["retain1"],
    }
    assert record["steps"] == QUICK["max_steps"]
    for split, digest in record["data"]["sha256"].items():
        raw = (micro_world / "data" / "raw" / f"{split}.json").read_bytes()
        assert digest == hashlib.sha256(raw).hexdigest()
    weights = (target / "model.safetensors").read_bytes()
    assert record["target"]["sha256"]["model.safetensors"] == hashlib.sha256(weights).hexdigest()
    assert set(record["versions"]) >= {"torch", "transformers", "peft"}


def test_recorded_code_changes_match_the_saved_weights(full_run: Path, target: Path) -> None:
    record = json.loads((full_run / "unlearn.json").read_text())["changed_codes"]
    before, after = fp32_model(target), fp32_model(full_run)
    name = "model.layers.0.self_attn.o_proj"
    w0, w1 = before.get_submodule(name).weight, after.get_submodule(name).weight
    expected = (nf4_codes(w0) != nf4_codes(w1)).float().mean().item()
    assert record["nf4"]["per_layer"][name] == pytest.approx(expected, abs=1e-6)
    assert 0 < record["nf4"]["overall"] < 1


def test_lora_run_saves_a_peft_adapter_that_loads_merged_and_unmerged(
    lora_run: Path, target: Path, batches
) -> None:
    assert (lora_run / "adapter_model.safetensors").is_file()
    assert not (lora_run / "model.safetensors").exists()
    merged, _ = load_causal_lm(str(target), adapter=str(lora_run), merge=True)
    unmerged, _ = load_causal_lm(str(target), adapter=str(lora_run), merge=False)
    before = forget_nll(fp32_model(target), batches["forget"])
    assert forget_nll(merged, batches["forget"]) > before + 0.1
    with torch.no_grad():
        a = merged(batches["forget"]["input_ids"]).logits
        b = unmerged(batches["forget"]["input_ids"]).logits
    assert torch.allclose(a, b, atol=1e-4)
    # the recorded code changes are those of the merged weights
    record = json.loads((lora_run / "unlearn.json").read_text())["changed_codes"]
    name = "model.layers.0.mlp.up_proj"
    w0 = fp32_model(target).get_submodule(name).weight
    w1 = merged.get_submodule(name).weight
    expected = (nf4_codes(w0) != nf4_codes(w1)).float().mean().item()
    assert record["nf4"]["per_layer"][name] == pytest.approx(expected, abs=1e-6)


def test_bf16_run_saves_bf16_weights_that_moved_only_where_updates_survive_rounding(
    target: Path, micro_world: Path, tmp_path: Path
) -> None:
    config = UnlearnConfig(method="ga", retain_loss="none", max_steps=3, lr=1e-5)
    out = unlearn(target, micro_world / "data", config, tmp_path / "bf16", progress=False)
    saved = AutoModelForCausalLM.from_pretrained(out)
    assert saved.dtype == torch.bfloat16
    name = "model.layers.0.self_attn.q_proj"
    w0 = fp32_model(target).get_submodule(name).weight.to(torch.bfloat16)
    w1 = saved.get_submodule(name).weight
    moved = w0 != w1
    # Adam's first steps are ~lr per weight: below half a bf16 ulp for large weights
    assert moved.any()
    assert w0[moved].abs().float().median() < w0[~moved].abs().float().median()


# --------------------------------------------------------------------------- refusals


def run_cli(*args: str) -> int:
    return main(["unlearn", *args])


def cli_args(target: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--model",
        str(target),
        "--data",
        str(data),
        "--method",
        "ga",
        "--out",
        str(out),
        "--max-steps",
        "2",
        "--param-dtype",
        "fp32",
        *extra,
    ]


def test_cli_run_then_refuse_to_overwrite_unless_asked(target, micro_world, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["unlearn", *cli_args(target, micro_world / "data", out)]) == 0
    printed = capsys.readouterr()
    assert "GA+GDR (full)" in printed.out
    # Off a terminal the steps' progress is a few plain lines, not a redrawn bar.
    assert "\r" not in printed.err and printed.err.count(" steps (") <= 11
    record = json.loads((out / "unlearn.json").read_text())  # what --overwrite may replace
    assert record["files"] == sorted(p.name for p in out.iterdir())
    assert {"unlearn.json", "model.safetensors"} <= set(record["files"])
    stamp = (out / "unlearn.json").stat().st_mtime_ns
    assert run_cli(*cli_args(target, micro_world / "data", out)) == 2
    err = capsys.readouterr().err
    assert "already holds another unlearning run" in err and "--overwrite" in err
    assert (out / "unlearn.json").stat().st_mtime_ns == stamp
    assert main(["unlearn", *cli_args(target, micro_world / "data", out, "--overwrite")]) == 0


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "raw" / "forget.json").unlink(), "forget.json: missing"),
        (lambda d: (d / "raw" / "retain1.json").write_text("[]"), "split is empty"),
        (lambda d: (d / "raw" / "retain1.json").write_text('["  "]'), "only blank texts"),
    ],
)
def test_missing_or_empty_data_is_one_line(damage, message, target, micro_world, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(micro_world / "data", data)
    damage(data)
    assert run_cli(*cli_args(target, data, tmp_path / "out")) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_runs_side_by_side_raise_the_first_failure_and_write_no_run(
    target: Path, micro_world: Path, tmp_path: Path
) -> None:
    """``unlearn_all``: a run whose data is broken fails in its worker process; the failure
    reaches the caller as the one-line error a lone run gives, and no run folder is left."""
    data = tmp_path / "data"
    shutil.copytree(micro_world / "data", data)
    (data / "raw" / "forget.json").unlink()
    configs = {name: UnlearnConfig(max_steps=1, seed=seed) for seed, name in enumerate("ab")}
    with pytest.raises(MuseQuantError, match="forget.json: missing"):
        unlearn_all(target, data, configs, tmp_path / "runs", workers=2)
    assert not any((tmp_path / "runs" / name).exists() for name in configs)


def test_lora_on_a_model_without_linear_layers_is_refused(micro_world, tmp_path, capsys) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = tmp_path / "gpt2"  # GPT-2's blocks use Conv1D, not nn.Linear: nothing to adapt
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=64, n_head=2, vocab_size=1024)).save_pretrained(
        gpt2
    )
    AutoTokenizer.from_pretrained(micro_world / "models" / "target").save_pretrained(gpt2)
    assert run_cli(*cli_args(gpt2, micro_world / "data", tmp_path / "out", "--mode", "lora")) == 2
    assert "no linear layers besides the output head" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_nan_loss_stops_with_a_message_and_writes_nothing(target, micro_world, tmp_path, capsys):
    args = cli_args(
        target, micro_world / "data", tmp_path / "out", "--lr", "1e30", "--max-steps", "20"
    )
    assert run_cli(*args) == 2
    err = capsys.readouterr().err
    assert "the loss became" in err and "nothing was saved" in err
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.building-*"))


def test_unknown_method_config_is_refused() -> None:
    with pytest.raises(MuseQuantError, match="unknown param dtype 'fp8'"):
        UnlearnConfig(param_dtype="fp8")


def test_early_stopping_needs_every_checked_score_at_its_threshold(target, micro_world, tmp_path):
    data = micro_world / "data"
    base = {**QUICK, "max_steps": 4, "check_every": 2, "stop_verbmem": 1.0}
    stops = unlearn(target, data, UnlearnConfig(**base), tmp_path / "a", progress=False)
    record = json.loads((stops / "unlearn.json").read_text())
    assert record["steps"] == 2 and record["stopped_early"]
    assert [c["step"] for c in record["forget_checks"]] == [2]
    # the same run also asked for forget QA at 0, which four steps do not reach: it runs on
    never = UnlearnConfig(**base, stop_knowmem=0.0)
    runs = unlearn(target, data, never, tmp_path / "b", progress=False)
    record = json.loads((runs / "unlearn.json").read_text())
    assert record["steps"] == 4 and not record["stopped_early"]
    assert [sorted(c) for c in record["forget_checks"]] == [["knowmem", "step", "verbmem"]] * 2
