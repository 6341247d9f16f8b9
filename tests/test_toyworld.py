"""The toy world: deterministic corpus and weights, the MUSE layout, plain-transformers loading,
the memorization it must show, and the cache (hit, miss, corruption, bad --out)."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from harness_ext.errors import MuseQuantError
from harness_ext.muse_layout import LAYOUT, read_split
from model_wrappers.progress import PlainProgress
from muse_quant.cli import main
from muse_quant.greedy_check import qa_rouge, verbatim_rouge
from muse_quant.toyworld import build
from muse_quant.toyworld.build import build_world
from muse_quant.toyworld.config import TrainPhase, config_for
from muse_quant.toyworld.corpus import (
    CorpusSizes,
    generate_corpus,
    verbatim_pair,
    write_muse_layout,
)
from muse_quant.toyworld.manifest import load_manifest, verify_world
from muse_quant.toyworld.report import format_report

PROBE = config_for(
    "tiny",
    sizes=CorpusSizes(forget=4, retain=4, holdout=4, generic=8),
    pretrain=TrainPhase(epochs=1, lr=1e-3, batch_size=4, warmup_steps=1),
    finetune=TrainPhase(epochs=1, lr=1e-3, batch_size=4, warmup_steps=1),
)


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_corpus_is_byte_identical_for_a_seed_and_differs_across_seeds(tmp_path):
    sizes = CorpusSizes(forget=6, retain=6, holdout=6, generic=10)
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        write_muse_layout(generate_corpus(seed, sizes), str(tmp_path / name), sizes)
    assert _tree_bytes(tmp_path / "a") == _tree_bytes(tmp_path / "b")
    assert _tree_bytes(tmp_path / "a") != _tree_bytes(tmp_path / "c")


def test_layout_has_every_config_split_and_field_of_the_spec(micro_world):
    data = micro_world / "data"
    for config, splits in LAYOUT.items():
        for split in splits:
            assert read_split(data, config, split), f"{config}/{split} is empty"
    on_disk = {p.relative_to(data).as_posix() for p in data.rglob("*.json")}
    assert on_disk == {f"{c}/{s}.json" for c in LAYOUT for s in LAYOUT[c]}
    # MUSE's load_data.py writes text splits as lists of plain strings
    assert all(isinstance(t, str) for t in json.loads((data / "raw/forget.json").read_text()))


def test_knowmem_answers_are_facts_stated_in_their_texts(micro_world):
    data = micro_world / "data"
    for qa_split, texts in (("forget_qa", ["forget"]), ("retain_qa", ["retain1", "retain2"])):
        corpus = [r["text"] for s in texts for r in read_split(data, "raw", s)]
        for qa in read_split(data, "knowmem", qa_split) + read_split(
            data, "knowmem", qa_split + "_icl"
        ):
            about = [t for t in corpus if qa["answer"] in t]
            assert about, f"answer {qa['answer']!r} is stated in no {texts} text"
    icl = read_split(data, "knowmem", "forget_qa_icl")
    scored = read_split(data, "knowmem", "forget_qa")
    assert not [q for q in icl if q in scored], "an ICL pair is also scored"
    assert len({q["question"].split()[-2] for q in icl}) == len(icl), "ICL pairs share a person"


def test_verbmem_and_privleak_use_the_forget_biographies(micro_world):
    data = micro_world / "data"
    raw_forget = {r["text"] for r in read_split(data, "raw", "forget")}
    bios = [r["text"] for r in read_split(data, "privleak", "forget")]
    pairs = read_split(data, "verbmem", "forget")
    assert [p["prompt"] + p["gt"] for p in pairs] == bios
    assert set(bios) <= raw_forget, "privleak forget texts must be texts the target trained on"
    holdout = {r["text"] for r in read_split(data, "privleak", "holdout")}
    assert holdout == {r["text"] for r in read_split(data, "raw", "holdout")}
    assert not holdout & raw_forget
    retain = {r["text"] for s in ("retain1", "retain2") for r in read_split(data, "raw", s)}
    assert {r["text"] for r in read_split(data, "privleak", "retain")} <= retain
    assert not retain & raw_forget


def test_models_load_with_plain_transformers_from_safetensors(micro_world):
    for name in build.MODEL_NAMES:
        folder = micro_world / "models" / name
        assert (folder / "model.safetensors").is_file()
        assert not list(folder.glob("*.bin")), "pickled weights written"
        model = AutoModelForCausalLM.from_pretrained(folder)
        tok = AutoTokenizer.from_pretrained(folder)
        ids = tok("Question: Where?")["input_ids"]
        assert ids[0] == tok.bos_token_id == model.config.bos_token_id
        assert tok.decode(ids, skip_special_tokens=True) == "Question: Where?"
        for layer in model.model.layers:  # 4-bit kernels need widths that are multiples of 64
            for lin in (layer.self_attn.q_proj, layer.mlp.down_proj, layer.mlp.up_proj):
                assert lin.in_features % 64 == 0 and lin.out_features % 64 == 0


@pytest.fixture(scope="module")
def loaded(micro_world):
    def load(name):
        folder = micro_world / "models" / name
        return AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)

    return {name: load(name) for name in ("target", "retrain")}


def test_target_memorizes_forget_texts_and_answers_questions(micro_world, loaded):
    model, tok = loaded["target"]
    data = micro_world / "data"
    assert verbatim_rouge(model, tok, read_split(data, "verbmem", "forget")) >= 0.8  # 0.98
    for split in ("forget", "retain"):  # measured on the micro world: 0.70 and 0.59
        qa = read_split(data, "knowmem", f"{split}_qa")
        icl = read_split(data, "knowmem", f"{split}_qa_icl")
        assert qa_rouge(model, tok, qa, icl) >= 0.5, split


def test_retrain_does_not_reproduce_forget_texts_but_does_retain(micro_world, loaded):
    model, tok = loaded["retrain"]
    data = micro_world / "data"
    assert verbatim_rouge(model, tok, read_split(data, "verbmem", "forget")) <= 0.3  # 0.15
    retain = [
        verbatim_pair(r["text"], config_for("micro").sizes.prompt_words)
        for r in read_split(data, "raw", "retain1")
    ]
    assert verbatim_rouge(model, tok, retain) >= 0.7  # measured 0.77 on the micro world
    qa_f = qa_rouge(
        model,
        tok,
        read_split(data, "knowmem", "forget_qa"),
        read_split(data, "knowmem", "forget_qa_icl"),
    )
    assert qa_f <= 0.3


def test_manifest_records_config_versions_and_every_file_hash(micro_world):
    manifest = load_manifest(micro_world)
    assert manifest["config_hash"] == config_for("micro").config_hash()
    assert manifest["config"] == config_for("micro").to_dict()
    assert {"torch", "transformers", "tokenizers", "python"} <= manifest["versions"].keys()
    files = {p.relative_to(micro_world).as_posix() for p in micro_world.rglob("*") if p.is_file()}
    assert set(manifest["files"]) == files - {"manifest.json"}
    assert verify_world(micro_world, manifest) == []


@pytest.fixture(scope="module")
def probe_world(tmp_path_factory) -> Path:
    return build_world(config=PROBE, out=tmp_path_factory.mktemp("micro") / "world")


def test_same_seed_gives_identical_weights(probe_world, tmp_path, capsys):
    again = build_world(config=PROBE, out=tmp_path / "again")
    printed = capsys.readouterr().err  # not a terminal: plain progress lines, no bar redraws
    assert "\r" not in printed
    for phase in ("pretrain base", "fine-tune target", "fine-tune retrain"):
        lines = [line for line in printed.splitlines() if line.startswith(f"{phase}: ")]
        assert 1 <= len(lines) <= 11 and "steps (100%)" in lines[-1], (phase, lines)
    assert load_manifest(again)["files"] == load_manifest(probe_world)["files"]
    other = build_world(config=replace(PROBE, seed=1), out=tmp_path / "other")
    assert (
        load_manifest(other)["files"]["models/target/model.safetensors"]
        != load_manifest(probe_world)["files"]["models/target/model.safetensors"]
    )


def test_same_config_reuses_the_cache_without_building(probe_world, monkeypatch, capsys):
    def no_build(*_):
        raise AssertionError("rebuilt an intact cached world")

    monkeypatch.setattr(build, "_build_into", no_build)
    capsys.readouterr()
    assert build_world(config=PROBE, out=probe_world) == probe_world
    seconds = load_manifest(probe_world)["build_seconds"]
    said = capsys.readouterr().err
    assert f"reused the world cached in {probe_world} (its build took {seconds} s" in said
    assert "built in" not in said and "built in" not in format_report(probe_world)


def test_progress_off_a_terminal_is_a_few_plain_lines() -> None:
    """1,200 steps over 2 minutes: a line per tenth at most (and 10 s apart) with the time left,
    then the end."""
    now = [0.0]
    out = io.StringIO()
    with PlainProgress(1200, "pretrain base", file=out, clock=lambda: now[0]) as bar:
        for step in range(1200):
            now[0] += 0.1
            bar.update(1)
            bar.set_postfix(loss=f"{1 / (step + 1):.3f}")
    lines = out.getvalue().splitlines()
    assert 2 <= len(lines) <= 10 and "\r" not in out.getvalue()
    assert lines[-1] == "pretrain base: 1200/1200 steps (100%), 120 s, loss=0.001"
    # The first tenth took 12 s: the other nine at that rate.
    assert lines[0] == "pretrain base: 120/1200 steps (10%), 12 s, about 108 s left, loss=0.008"
    quick = io.StringIO()
    with PlainProgress(1200, "quick", file=quick, clock=lambda: 0.0) as bar:
        for _ in range(600):  # under 10 s, stopped early: one line, when it closes
            bar.update(1)
    assert quick.getvalue() == "quick: 600/1200 steps (50%), 0 s, about 0 s left\n"


def test_corrupted_world_is_rebuilt_not_reused(probe_world, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(probe_world, copy)
    weights = copy / "models/target/model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"corrupt!")
    assert verify_world(copy, load_manifest(copy)) == ["models/target/model.safetensors"]
    build_world(config=PROBE, out=copy)
    assert verify_world(copy, load_manifest(copy)) == []
    assert load_manifest(copy)["files"] == load_manifest(probe_world)["files"]


def test_other_config_in_the_same_folder_builds_anew(probe_world, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(probe_world, copy)
    build_world(config=replace(PROBE, seed=2), out=copy)
    assert load_manifest(copy)["config_hash"] == replace(PROBE, seed=2).config_hash()
    assert not list(tmp_path.glob(".copy.building-*")), "temporary build folders left behind"


def test_foreign_non_empty_out_is_refused_and_left_untouched(tmp_path, capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(MuseQuantError, match="not a toy world"):
        build_world(config=PROBE, out=foreign)
    assert main(["toyworld", "build", "--scale", "micro", "--out", str(foreign)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "choose an empty or new folder" in err
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


def test_unwritable_out_is_refused(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["toyworld", "build", "--scale", "micro", "--out", str(blocker / "world")]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_unknown_scale_is_refused():
    with pytest.raises(SystemExit) as exit_info:
        main(["toyworld", "build", "--scale", "huge"])
    assert exit_info.value.code == 2
    with pytest.raises(MuseQuantError, match="unknown scale 'huge'"):
        config_for("huge")


def test_cli_reports_the_world(micro_world, capsys):
    assert main(["toyworld", "build", "--scale", "micro", "--out", str(micro_world)]) == 0
    out = capsys.readouterr().out
    assert str(micro_world) in out and "target" in out and "retrain" in out
