"""Loading checkpoints and LoRA adapters: merge semantics, safety refusals, provenance, cache.

The adapter is made here with peft on the micro toy world's target (seeded, small, saved with
``save_pretrained``): merged in float32 or kept unmerged, the two agree at fp32 and differ once
the base is quantized to NF4.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from muse_run import one_line
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from harness_ext.errors import MuseQuantError
from model_wrappers.calibration import resolve_calibration
from model_wrappers.loading import load_causal_lm

TARGETS = ["q_proj", "v_proj", "up_proj", "down_proj"]
PROMPT = torch.tensor([[1, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50]])


def make_adapter(base: torch.nn.Module, out: Path, seed: int = 0) -> Path:
    """A LoRA adapter with seeded, non-zero B matrices (a fresh LoRA is a no-op)."""
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.05)
    peft_model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def adapter(target: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32)
    return make_adapter(base, tmp_path_factory.mktemp("lora"))


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(PROMPT).logits.float()


# --------------------------------------------------------------------------- merge semantics


def test_merge_and_unmerged_agree_at_fp32(target: Path, adapter: Path) -> None:
    merged, prov = load_causal_lm(str(target), adapter=str(adapter), merge=True)
    unmerged, _ = load_causal_lm(str(target), adapter=str(adapter), merge=False)
    plain, _ = load_causal_lm(str(target))
    assert type(merged).__name__ == "LlamaForCausalLM"
    assert type(unmerged).__name__ == "PeftModelForCausalLM"
    assert torch.allclose(logits(merged), logits(unmerged), atol=1e-4)
    assert (logits(merged) - logits(plain)).abs().max() > 0.05  # the adapter does something
    assert prov["adapter"]["merged"] and "float32 base, then" in prov["adapter"]["procedure"]


def test_merge_and_unmerged_differ_at_nf4(target: Path, adapter: Path, tmp_path: Path) -> None:
    """merge=true quantizes W + BA; merge=false quantizes W and adds BA at full precision."""
    import bitsandbytes as bnb

    merged, _ = load_causal_lm(str(target), adapter=str(adapter), merge=True, precision="nf4")
    unmerged, prov = load_causal_lm(str(target), adapter=str(adapter), merge=False, precision="nf4")
    q_proj = unmerged.base_model.model.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj.base_layer, bnb.nn.Linear4bit) and "default" in q_proj.lora_A
    assert isinstance(merged.model.layers[0].self_attn.q_proj, bnb.nn.Linear4bit)
    assert (logits(merged) - logits(unmerged)).abs().max() > 1e-2
    assert not prov["adapter"]["merged"]

    # merge=true is exactly "save the float32 merge, then quantize that checkpoint"
    from peft import PeftModel

    base = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32)
    PeftModel.from_pretrained(base, adapter).merge_and_unload().save_pretrained(tmp_path)
    saved, _ = load_causal_lm(str(tmp_path), precision="nf4")
    assert torch.equal(logits(saved), logits(merged))


def random_llama(hidden: int, intermediate: int, layers: int) -> LlamaForCausalLM:
    """A small random Llama with the toy world's vocabulary, to build adapters that do not fit."""
    config = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=4,
        vocab_size=1024,
    )
    return LlamaForCausalLM(config)


def test_adapter_for_another_width_is_refused(target: Path, tmp_path: Path) -> None:
    other = make_adapter(random_llama(hidden=64, intermediate=128, layers=2), tmp_path / "narrow")
    for merge in (True, False):
        with pytest.raises(MuseQuantError) as err:
            load_causal_lm(str(target), adapter=str(other), merge=merge)
        assert "does not fit" in one_line(err) and "the adapter's lora_A expects" in one_line(err)


def test_adapter_for_missing_modules_is_refused(target: Path, tmp_path: Path) -> None:
    deeper = random_llama(hidden=128, intermediate=256, layers=5)
    other = make_adapter(deeper, tmp_path / "deeper")
    with pytest.raises(MuseQuantError) as err:
        load_causal_lm(str(target), adapter=str(other), precision="nf4", merge=False)
    first_missing = AutoConfig.from_pretrained(target).num_hidden_layers
    assert f"model.layers.{first_missing}." in one_line(err) and "does not have" in one_line(err)


def test_adapter_folder_without_config(target: Path, tmp_path: Path) -> None:
    with pytest.raises(MuseQuantError) as err:
        load_causal_lm(str(target), adapter=str(tmp_path))
    assert "no adapter_config.json" in one_line(err)


# --------------------------------------------------------------------------- safety


def test_pickled_weights_need_allow_pickle(target: Path, tmp_path: Path) -> None:
    shutil.copy(target / "config.json", tmp_path)
    model = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(MuseQuantError) as err:
        load_causal_lm(str(tmp_path))
    assert "pickled weights (pytorch_model.bin)" in one_line(err)
    assert "allow_pickle=true" in one_line(err)
    loaded, prov = load_causal_lm(str(tmp_path), allow_pickle=True)
    assert torch.equal(logits(loaded), logits(model))
    assert "pytorch_model.bin" in prov["weights_sha256"]


def test_pickled_adapter_needs_allow_pickle(target: Path, adapter: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    shutil.copy(adapter / "adapter_config.json", tmp_path)
    torch.save(load_file(adapter / "adapter_model.safetensors"), tmp_path / "adapter_model.bin")
    with pytest.raises(MuseQuantError) as err:
        load_causal_lm(str(target), adapter=str(tmp_path))
    assert "allow_pickle=true" in one_line(err)
    pickled, _ = load_causal_lm(str(target), adapter=str(tmp_path), allow_pickle=True)
    safe, _ = load_causal_lm(str(target), adapter=str(adapter))
    assert torch.equal(logits(pickled), logits(safe))


def test_remote_code_needs_trust_remote_code(target: Path, tmp_path: Path) -> None:
    folder = tmp_path / "custom"
    shutil.copytree(target, folder)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "custom_llama"
    config["auto_map"] = {"AutoConfig": "custom.Config", "AutoModelForCausalLM": "custom.Model"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "custom.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(MuseQuantError) as err:
        load_causal_lm(str(folder))
    assert "pass trust_remote_code=true" in one_line(err)


@pytest.mark.parametrize("damage", ["missing", "garbage", "truncated", "missing shard"])
def test_bad_weight_files(damage: str, target: Path, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(target, folder)
    weights = folder / "model.safetensors"
    if damage == "missing":
        weights.unlink()
        expected = "no weight file in"
    elif damage == "garbage":
        weights.write_bytes(b"not a safetensors file" * 8)
        expected = "is not a readable safetensors file"
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        expected = "is not a readable safetensors file"
    else:
        weights.rename(folder / "model-00001-of-00002.safetensors")
        index = {
            "weight_map": {
                "a": "model-00001-of-00002.safetensors",
                "b": "model-00002-of-00002.safetensors",
            }
        }
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
        expected = "model-00002-of-00002.safetensors listed in"
    with pytest.raises(MuseQuantError) as err:
        load_causal_lm(str(folder))
    assert expected in one_line(err)


@pytest.mark.parametrize(
    ("pretrained", "expected"),
    [("/no/such/folder", "no such folder"), ("nobody/no-model", "not a hub model available")],
)
def test_unknown_model(pretrained: str, expected: str) -> None:
    with pytest.raises(MuseQuantError) as err:
        load_causal_lm(pretrained)
    assert expected in one_line(err)


# --------------------------------------------------------------------------- provenance


def test_provenance_records_what_ran(target: Path, adapter: Path) -> None:
    model, prov = load_causal_lm(
        str(target), adapter=str(adapter), precision="nf4", double_quant="true"
    )
    assert json.loads(json.dumps(prov)) == prov
    weights = (target / "model.safetensors").read_bytes()
    assert prov["weights_sha256"]["model.safetensors"] == hashlib.sha256(weights).hexdigest()
    assert set(prov["adapter"]["files_sha256"]) == {
        "adapter_config.json",
        "adapter_model.safetensors",
    }
    precision = prov["precision"]
    assert precision["name"] == "nf4" and precision["options"]["double_quant"] is True
    config = precision["library_config"]["quantization_config"]
    assert config["bnb_4bit_use_double_quant"] and config["bnb_4bit_quant_type"] == "nf4"
    assert precision["calibration"] is None
    assert prov["libraries"]["bitsandbytes"] and prov["libraries"]["torch"] == torch.__version__
    assert prov["device"]["device"] == "cpu"
    fp32_model, fp32 = load_causal_lm(str(target))
    block = sum(
        m.weight.numel()
        for m in fp32_model.model.layers.modules()
        if isinstance(m, torch.nn.Linear)
    )
    # 4-bit codes: half a byte per block weight instead of four; at most one more byte per 8
    # weights for the statistics (absmax per block of 64, double-quantized; a 256-entry code
    # table per layer).
    packed = fp32["resident_weight_bytes"] - 4 * block + block // 2
    assert packed <= prov["resident_weight_bytes"] <= packed + block // 8


def test_gptq_cache_and_merged_adapter(
    target: Path, adapter: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("gptqmodel", reason="pip install 'muse-quant[gptq]' to test GPTQ")
    monkeypatch.setenv("MUSE_QUANT_CACHE", str(tmp_path))
    runs = [
        load_causal_lm(str(target), adapter=str(adapter), precision="gptq-w4g128", emulated=True)
        for _ in range(2)
    ]
    (first, prov1), (second, prov2) = runs
    cache1, cache2 = (p["precision"]["library_config"]["cache"] for p in (prov1, prov2))
    assert (cache1["hit"], cache2["hit"]) == (False, True)
    assert cache1["folder"] == cache2["folder"] and cache1["folder"].startswith(str(tmp_path))
    assert torch.equal(logits(first), logits(second))
    _, plain = load_causal_lm(str(target), precision="gptq-w4g128", emulated=True)
    assert plain["precision"]["library_config"]["cache"]["folder"] != cache1["folder"]


def test_calibration_sources(micro_world: Path, tmp_path: Path) -> None:
    folder = micro_world / "data"
    retain = resolve_calibration(str(folder), tmp_path)
    assert retain.source.endswith("raw/retain1.json") and retain.texts
    texts = tmp_path / "generic.json"
    texts.write_text(json.dumps([{"text": "a generic sentence"}]))
    assert resolve_calibration(str(texts), tmp_path).texts == ("a generic sentence",)
    with pytest.raises(MuseQuantError) as err:
        resolve_calibration(None, tmp_path, model="~/models/m.Q4_1.gguf")  # in no toy world
    assert "GPTQ and AWQ need calibration texts" in one_line(err)
    assert "known for ~/models/m.Q4_1.gguf (it is in no toy world)" in one_line(err)
    with pytest.raises(MuseQuantError) as err:
        resolve_calibration(str(folder / "privleak" / "holdout.json"), tmp_path)
    assert "forget or evaluation text" in one_line(err)


def test_a_world_calibrates_its_own_models(micro_world: Path, tmp_path: Path) -> None:
    """A model of a toy world calibrates on the world's generic pretraining text by default; a
    world on a pretrained base has none (its folder has no pretrain/), and calibrates on its
    retain text, never on forget text."""
    model = micro_world / "models" / "target"
    toy = resolve_calibration(None, model)
    generic = json.loads((micro_world / "pretrain" / "generic.json").read_text())
    assert toy.texts == tuple(generic) and toy.source.endswith("pretrain/generic.json")
    real = tmp_path / "real-world"
    (real / "models").mkdir(parents=True)
    shutil.copytree(micro_world / "data", real / "data")
    shutil.copy(micro_world / "manifest.json", real)
    retain = json.loads((real / "data/raw/retain1.json").read_text())  # MUSE's: a list of texts
    forget = set(json.loads((real / "data/raw/forget.json").read_text()))
    got = resolve_calibration(None, real / "models" / "target")
    assert got.texts == tuple(retain) and not forget & set(got.texts)
    assert got.source.endswith("raw/retain1.json")


# --------------------------------------------------------------------------- through lm-eval


def eval_argv(model_args: str, world: Path, out: Path) -> list[str]:
    """``muse-quant eval`` arguments for KnowMem_r on the toy world with the muse model."""
    return [
        "eval", "--model", "muse", "--model_args", model_args, "--tasks", "muse_news_knowmem_r",
        "--metadata", f"muse_data={world / 'data'}", "--device", "cpu", "--output_path", str(out),
    ]


def test_results_file_carries_provenance(
    micro_world: Path, target: Path, adapter: Path, tmp_path: Path
) -> None:
    """``muse-quant eval --model muse --model_args ...,adapter=,merge=false,precision=nf4``."""
    from muse_quant.cli import main

    out = tmp_path / "out"
    args = f"pretrained={target},adapter={adapter},merge=false,precision=nf4,double_quant=true"
    argv = eval_argv(args, micro_world, out) + ["--batch_size", "64", "--limit", "4"]
    assert main(argv) == 0
    (results_file,) = out.rglob("results_*.json")
    provenance = json.loads(results_file.read_text())["config"]["muse_provenance"]
    assert provenance["precision"]["name"] == "nf4"
    assert provenance["precision"]["options"]["double_quant"] is True
    assert provenance["adapter"]["merged"] is False
    weights = hashlib.sha256((target / "model.safetensors").read_bytes()).hexdigest()
    assert provenance["weights_sha256"]["model.safetensors"] == weights


def test_bad_precision_through_the_command_line(
    micro_world: Path, target: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from muse_quant.cli import main

    out = tmp_path / "out"
    argv = eval_argv(f"pretrained={target},precision=int3", micro_world, out)
    assert main(argv) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("muse-quant: error: unknown precision 'int3'")
    assert not out.exists()
