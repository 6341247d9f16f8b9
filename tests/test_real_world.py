"""A world on a pretrained base (``toyworld build --base``): the base opened by content, the
retrain model trained in its own process epoch for epoch with the target, the target's stop rule,
the manifest, and the refusals. The base here is the micro world's small Llama (a local folder,
as ``--base PATH`` takes one), so each build takes seconds; building on SmolLM2 itself is measured
in docs/toyworld.md, not here."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from harness_ext.errors import MuseQuantError
from model_wrappers.training import TrainPhase, train_causal_lm
from muse_quant.cli import main
from muse_quant.toyworld.build import build_world
from muse_quant.toyworld.config import MemorizationGoal, config_for
from muse_quant.toyworld.corpus import CorpusSizes, generate_corpus
from muse_quant.toyworld.manifest import load_manifest, verify_world
from muse_quant.toyworld.pretrained import resolve_base

SMALL = config_for(
    "real",
    sizes=CorpusSizes(forget=3, retain=3, holdout=3, generic=0),
    finetune=TrainPhase(epochs=3, lr=1e-3, batch_size=4, warmup_steps=1),
)


@pytest.fixture(scope="module")
def base_folder(micro_world: Path, tmp_path_factory) -> Path:
    """A local Llama folder: a copy of the micro world's base model."""
    folder = tmp_path_factory.mktemp("base") / "small-llama"
    shutil.copytree(micro_world / "models" / "base", folder)
    return folder


def _alone(base, texts: list[str], epochs: int) -> dict[str, torch.Tensor]:
    """The base fine-tuned here, in one process, for ``epochs`` epochs of ``SMALL``'s schedule:
    what the world's target or retrain model must equal."""
    model, tokenizer = base.load()
    train_causal_lm(
        model, tokenizer, texts, SMALL.finetune, SMALL.seed + 1, "alone",
        until=lambda done: done >= epochs,
    )  # fmt: skip
    return model.state_dict()


def _same_weights(folder: Path, expected: dict[str, torch.Tensor]) -> bool:
    from transformers import AutoModelForCausalLM

    got = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).state_dict()
    return got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)


def test_the_goal_stops_target_and_retrain_at_the_same_epoch(base_folder: Path, tmp_path: Path):
    """A goal met at once stops both after one epoch (the retrain process waits for the target's
    word), and each equals the base trained one epoch in a single process."""
    base = resolve_base(str(base_folder))
    config = replace(SMALL, goal=MemorizationGoal(verbmem_forget=0.0, knowmem_forget=0.0))
    world = build_world(config=config, base=base, out=tmp_path / "world")
    manifest = load_manifest(world)
    assert manifest["finetune_epochs"] == 1 and not verify_world(world, manifest)
    assert manifest["goal_met"] is True
    assert manifest["base"]["sha256"] == base.identity.sha256
    assert manifest["config"]["base"] == {"label": "small-llama", "sha256": base.identity.sha256}
    corpus = generate_corpus(config.seed, config.sizes)
    retain = corpus.retain + corpus.retain_quiz
    target = corpus.forget + corpus.forget_quiz + retain
    assert _same_weights(world / "models" / "retrain", _alone(base, retain, 1))
    assert _same_weights(world / "models" / "target", _alone(base, target, 1))
    assert _same_weights(world / "models" / "base", base.load()[0].state_dict())
    assert set(manifest["memorization"]) == {"target", "retrain"}


def test_an_unmet_goal_trains_every_epoch(base_folder: Path, tmp_path: Path, capsys):
    """Every epoch trained, then the world kept with a warning and ``goal_met: false``."""
    base = resolve_base(str(base_folder))
    config = replace(SMALL, goal=MemorizationGoal(verbmem_forget=1.01, knowmem_forget=1.01))
    world = build_world(config=config, base=base, out=tmp_path / "world")
    manifest = load_manifest(world)
    assert manifest["finetune_epochs"] == SMALL.finetune.epochs and manifest["goal_met"] is False
    warning = [line for line in capsys.readouterr().err.splitlines() if "warning:" in line]
    assert len(warning) == 1 and "short of the goal (1.01 and 1.01)" in warning[0]
    corpus = generate_corpus(config.seed, config.sizes)
    retain = corpus.retain + corpus.retain_quiz
    assert _same_weights(world / "models" / "retrain", _alone(base, retain, 3))


def test_the_base_is_named_by_content(base_folder: Path, tmp_path: Path):
    """A copy elsewhere is the same base (the same world); changed weights are another."""
    moved = tmp_path / base_folder.name
    shutil.copytree(base_folder, moved)
    assert resolve_base(str(moved)).identity == resolve_base(str(base_folder)).identity
    weights = moved / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    changed = resolve_base(str(moved)).identity
    assert changed.sha256 != resolve_base(str(base_folder)).identity.sha256


def test_bad_bases_are_refused_in_one_line(base_folder: Path, tmp_path: Path, capsys):
    cases = {
        ("--base", "smollm2-136m"): "did you mean 'smollm2-135m'",
        ("--base", str(base_folder), "--scale", "tiny"): "--base builds the real world",
    }
    for argv, said in cases.items():
        assert main(["toyworld", "build", *argv, "--out", str(tmp_path / "w")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and said in err[0], err
    gpt2 = tmp_path / "gpt2"
    shutil.copytree(base_folder, gpt2)
    config = json.loads((gpt2 / "config.json").read_text())
    (gpt2 / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    with pytest.raises(MuseQuantError, match="a 'gpt2' model; a world is built on llama"):
        resolve_base(str(gpt2))
    with pytest.raises(MuseQuantError, match="pass --base"):
        build_world(scale="real", out=tmp_path / "w")
    assert not (tmp_path / "w").exists()
