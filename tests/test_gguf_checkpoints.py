"""GGUF files as checkpoints (docs/precisions.md, "GGUF files as checkpoints"): ``pretrained=``
naming a .gguf file, or a folder holding one and no config.json.

The files are the micro target written by the project's own GGUF writer (``gguf-f32``,
``gguf-q8_0``), copied out of the cache as a third party would ship them. The f32 file opened as
a checkpoint is the target exactly (weights, logits, tokenizer, MUSE metrics); ``gguf-shipped``
on the q8_0 file is ``gguf-q8_0`` of the target exactly (the same file, the same runtime); a torch
precision builds from the file's dequantized tensors, cached once; bad input is one line, exit 2,
nothing written; an audit and a board take such a model and mark it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from muse_run import logits, one_line, run_tasks
from transformers import AutoTokenizer

from bench.results import flat_metrics
from harness_ext.errors import MuseQuantError
from leaderboards.render.csv_table import render_csv
from leaderboards.render.html_page import render_html
from leaderboards.render.json_board import render_json
from leaderboards.render.markdown import render_markdown
from leaderboards.robustness import build_board
from model_wrappers.loading import load_causal_lm
from model_wrappers.opening import open_checkpoint
from model_wrappers.precisions import resolve_precision

gguf = pytest.importorskip("gguf", reason="pip install 'muse-quant[gguf]' to test GGUF")
pytest.importorskip("llama_cpp", reason="pip install 'muse-quant[gguf]' to test GGUF")

import model_wrappers.muse_model  # noqa: E402, F401 - registers --model muse
from model_wrappers.precisions.gguf import gguf_file  # noqa: E402
from muse_quant.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def shipped(target: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The target as GGUF files (f32, q8_0), each copied into a folder of its own."""
    source = open_checkpoint(str(target)).source
    files = {}
    for kind in ("f32", "q8_0"):
        path, _ = gguf_file(source, resolve_precision(f"gguf-{kind}", emulated=True))
        folder = tmp_path_factory.mktemp(f"shipped-{kind}")
        files[kind] = Path(shutil.copy(path, folder / f"target-{kind}.gguf"))
    return files


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, micro_world: Path) -> Path:
    """An empty cache root for this test (the toy world is found in the tests' cache first)."""
    root = tmp_path / "cache"
    monkeypatch.setenv("MUSE_QUANT_CACHE", str(root))
    return root


def evaluate(pretrained: Path, data: Path, out: Path, model_args: str, *extra: str) -> dict:
    """``muse-quant eval`` of the MUSE news suite; its results file."""
    argv = [
        "eval", "--model", "muse", "--model_args", f"pretrained={pretrained},{model_args}",
        "--tasks", "muse_news", "--metadata", f"muse_data={data}", "--device", "cpu",
        "--batch_size", "64", "--output_path", str(out), *extra,
    ]  # fmt: skip
    assert main(argv) == 0
    (path,) = out.rglob("results_*.json")
    return json.loads(path.read_text())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def texts(world: Path) -> list[str]:
    rows = json.loads((world / "data" / "privleak" / "forget.json").read_text())
    return rows[:8] + ["Two  spaces,\n\nnew lines, digits 2024 and ünïcödé ✓"]


# --------------------------------------------------------------------------- the round trip


def test_f32_file_is_the_target_exactly(
    shipped: dict[str, Path], target: Path, micro_world: Path, tmp_path: Path
) -> None:
    """Weights, logits, token ids and MUSE metrics of the f32 file at fp32 are the target's. The
    tokenizer is the file's tokenizer.json: transformers' rebuild from tokenizer.ggml.* splits
    the toy world's byte-level BPE by GPT-2's regex, which its whitespace split is not."""
    path = shipped["f32"]
    model, prov = load_causal_lm(str(path), precision="fp32")
    reference, _ = load_causal_lm(str(target), precision="fp32")
    for (name, a), (_, b) in zip(
        model.state_dict().items(), reference.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert torch.equal(logits(model), logits(reference))

    block = prov["gguf_source"]
    assert (block["sha256"], block["file_type"], block["bits"]) == (sha256(path), "ALL_F32", 32)
    assert block["tensor_types"] == {"F32": len(reference.state_dict())}
    assert block["shipped"] is False and "dequantized to float32" in block["note"]
    folder = Path(block["hf_folder"]["folder"])
    assert block["hf_folder"]["tokenizer"] == "the file's tokenizer.huggingface.json"
    own, original = AutoTokenizer.from_pretrained(folder), AutoTokenizer.from_pretrained(target)
    rebuilt = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    sample = texts(micro_world)
    assert [own(t)["input_ids"] for t in sample] == [original(t)["input_ids"] for t in sample]
    assert [rebuilt(t)["input_ids"] for t in sample] != [original(t)["input_ids"] for t in sample]

    data = micro_world / "data"
    results = evaluate(path, data, tmp_path / "out", "precision=fp32")
    expected = run_tasks(target, data, ["muse_news"], model_args={"precision": "fp32"})
    assert flat_metrics(results) == flat_metrics(expected)
    assert results["config"]["muse_provenance"]["gguf_source"]["sha256"] == sha256(path)


def test_shipped_file_on_llama_cpp_is_gguf_q8_0_of_the_target(
    shipped: dict[str, Path], target: Path, micro_world: Path, tmp_path: Path
) -> None:
    """The q8_0 file (named by its folder) as shipped is the target's gguf-q8_0: the same file
    on the same runtime, the same metrics; the provenance names the file, its type and tensor
    types, and that it ran as shipped (nothing dequantized)."""
    path = shipped["q8_0"]
    data = micro_world / "data"
    results = evaluate(path.parent, data, tmp_path / "out", "precision=gguf-shipped")
    expected = run_tasks(target, data, ["muse_news"], model_args={"precision": "gguf-q8_0"})
    assert flat_metrics(results) == flat_metrics(expected)

    prov = results["config"]["muse_provenance"]
    library = prov["precision"]["library_config"]
    digest = sha256(path)
    theirs = expected["config"]["muse_provenance"]["precision"]["library_config"]
    assert library["file_sha256"] == theirs["file_sha256"] == digest
    assert library["file"] == str(path) and library["shipped"] is True
    assert prov["weights_sha256"] == {path.name: digest}
    assert prov["resident_weight_bytes"] == library["tensor_bytes"]
    block = prov["gguf_source"]
    reader = gguf.GGUFReader(str(path))
    counts = dict(Counter(t.tensor_type.name for t in reader.tensors))
    assert (block["file_type"], block["bits"], block["tensor_types"]) == ("MOSTLY_Q8_0", 8, counts)
    assert block["shipped"] is True and block["note"].startswith("the shipped file itself")
    assert block["hf_folder"]["weights"] is False  # tokenizer and config only
    assert results["config"]["model_dtype"] == "q8_0"


def test_a_torch_precision_builds_from_the_dequantized_file_cached_once(
    shipped: dict[str, Path], target: Path, micro_world: Path, tmp_path: Path, cache: Path
) -> None:
    """The q8_0 file's fp32 is its tensors dequantized (bit-equal to the target's gguf-q8_0 in
    emulated mode: the same file's tensors through the gguf package); the dequantized folder is
    written once and read from the cache after; nf4 builds and evaluates from it."""
    path = shipped["q8_0"]
    started = time.perf_counter()
    first = open_checkpoint(str(path)).weights
    made = time.perf_counter() - started
    started = time.perf_counter()
    again = open_checkpoint(str(path)).weights
    reused = time.perf_counter() - started
    assert first.gguf is not None and again.gguf is not None
    assert (first.gguf.hf_folder["hit"], again.gguf.hf_folder["hit"]) == (False, True)
    assert again.folder == first.folder and first.folder.is_relative_to(cache)
    print(f"dequantized folder: made in {made:.2f} s, from the cache in {reused:.3f} s")

    dequantized, _ = load_causal_lm(str(path), precision="fp32")
    emulated, _ = load_causal_lm(str(target), precision="gguf-q8_0", emulated=True)
    for (name, a), (_, b) in zip(
        dequantized.state_dict().items(), emulated.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name

    results = evaluate(
        path, micro_world / "data", tmp_path / "out", "precision=nf4", "--limit", "2"
    )
    prov = results["config"]["muse_provenance"]
    assert prov["precision"]["name"] == "nf4" and prov["pretrained"] == str(path)
    block = prov["gguf_source"]
    assert block["sha256"] == sha256(path) and block["tensor_types"] == {"Q8_0": 9, "F32": 3}
    assert block["shipped"] is False and "dequantized" in block["note"]
    assert block["hf_folder"]["hit"] is True
    assert set(prov["weights_sha256"]) == {"config.json", "model.safetensors"}


def test_an_adapter_on_the_f32_file_is_the_adapter_on_the_target(
    shipped: dict[str, Path], target: Path, tmp_path: Path
) -> None:
    """The dequantized folder is an ordinary checkpoint: an adapter merges into it as into the
    target (the same weights, so the same merged logits at fp32 and nf4), after the base check,
    which refuses a base other than the recorded one unless allowed."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32)
    lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "up_proj"]))
    with torch.no_grad():
        for name, param in lora.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=torch.Generator().manual_seed(0)))
    lora.save_pretrained(tmp_path / "lora")
    adapter = str(tmp_path / "lora")
    with pytest.raises(MuseQuantError) as err:
        load_causal_lm(str(shipped["f32"]), adapter=adapter, precision="fp32")
    assert "was trained on another base" in one_line(err)
    for precision in ("fp32", "nf4"):
        merged, prov = load_causal_lm(
            str(shipped["f32"]), adapter=adapter, precision=precision, allow_other_base=True
        )
        reference, _ = load_causal_lm(str(target), adapter=adapter, precision=precision)
        assert torch.equal(logits(merged), logits(reference)), precision
        assert prov["adapter"]["merged"] is True and "OVERRIDDEN" in prov["adapter"]["base"]


# --------------------------------------------------------------------------- bad input


def _two_files(tmp: Path, q8: Path, target: Path) -> str:
    folder = tmp / "two"
    folder.mkdir()
    for name in ("a.gguf", "b.gguf"):
        shutil.copy(q8, folder / name)
    return f"pretrained={folder},precision=fp32"


def _truncated(tmp: Path, q8: Path, target: Path) -> str:
    blob = q8.read_bytes()
    (tmp / "cut.gguf").write_bytes(blob[: len(blob) // 2])
    return f"pretrained={tmp / 'cut.gguf'},precision=fp32"


def _not_gguf(tmp: Path, q8: Path, target: Path) -> str:
    (tmp / "junk.gguf").write_bytes(b"not a gguf file " * 64)
    return f"pretrained={tmp / 'junk.gguf'},precision=gguf-shipped"


def _adapter(tmp: Path, q8: Path, target: Path) -> str:
    (tmp / "lora").mkdir()
    return f"pretrained={q8},adapter={tmp / 'lora'},precision=gguf-shipped"


CASES = {
    "two GGUF files": (_two_files, "2 GGUF files in a folder without config.json (a.gguf, b.gguf)"),
    "truncated file": (_truncated, "is not a readable GGUF file"),
    "not a GGUF file": (_not_gguf, "is not a readable GGUF file (GGUF magic invalid)"),
    "shipped HF checkpoint": (
        lambda tmp, q8, target: f"pretrained={target},precision=gguf-shipped",
        "gguf-shipped evaluates a GGUF file as shipped, and pretrained=",
    ),
    "shipped with an adapter": (_adapter, "which holds no adapter"),
    "shipped after a deployment": (
        lambda tmp, q8, target: f"pretrained={q8},precision=wanda-50+gguf-shipped",
        "deployment steps change weights; put them before",
    ),
    "shipped emulated": (
        lambda tmp, q8, target: f"pretrained={q8},precision=gguf-shipped,emulated=true",
        "emulated=true cannot reproduce it (the shipped file's tensors dequantized",
    ),
    "no such file": (
        lambda tmp, q8, target: f"pretrained={tmp / 'gone.gguf'},precision=fp32",
        "no such GGUF file",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    case: str,
    shipped: dict[str, Path],
    target: Path,
    micro_world: Path,
    tmp_path: Path,
    cache: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    make, expected = CASES[case]
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    out = tmp_path / "out"
    argv = [
        "eval", "--model", "muse", "--model_args", make(inputs, shipped["q8_0"], target),
        "--tasks", "muse_news_knowmem_f", "--metadata", f"muse_data={micro_world / 'data'}",
        "--device", "cpu", "--output_path", str(out),
    ]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("muse-quant: error: ") and expected in err[-1], err[-1]
    assert not out.exists() and not cache.exists()


# --------------------------------------------------------------------------- audit and board


def test_an_audit_and_its_board_mark_the_gguf_model(
    shipped: dict[str, Path], micro_world: Path, tmp_path: Path
) -> None:
    """``muse-quant audit --model x.gguf`` (a sweep of its cells): the model at fp32 and as
    shipped, the references at fp32 only (they have no such file); the board of those results
    marks the model's rows [GGUF] and says which file, in Markdown, HTML, CSV and JSON."""
    path = shipped["q8_0"]
    out = tmp_path / "audit"
    argv = [
        "audit", "--model", str(path), "--target", str(micro_world / "models" / "target"),
        "--retrain", str(micro_world / "models" / "retrain"), "--data", str(micro_world / "data"),
        "--precisions", "fp32,gguf-shipped", "--device", "cpu", "--out", str(out),
    ]  # fmt: skip
    assert main(argv) in (0, 1)  # the target itself "unlearned": the verdict may be either
    results = out / "results"
    files = sorted(p.relative_to(results).parts[:3] for p in results.rglob("results.json"))
    assert files == [
        ("retrain", "news", "fp32"), ("target", "news", "fp32"),
        ("target-q8_0", "news", "fp32"), ("target-q8_0", "news", "gguf-shipped"),
    ]  # fmt: skip
    assert "target-q8_0 [GGUF]" in (out / "report.md").read_text()

    board = build_board(results)
    (corpus,) = board.corpora
    assert corpus.precisions == ("fp32", "gguf-shipped")  # no bits in the name: last
    (model,) = corpus.methods
    assert model.gguf is not None and model.gguf.sha256 == (sha256(path),)
    assert all(m.gguf is None for m in corpus.references)
    note = f"target-q8_0 [GGUF]: GGUF file MOSTLY_Q8_0 (8-bit), sha256 {sha256(path)[:12]}"
    assert any(n.startswith(note) for n in corpus.notes)
    assert "retrain model has no results at gguf-shipped: C1, C2, PrivLeak n/a there" in (
        corpus.notes
    )
    markdown, html = render_markdown(board), render_html(board)
    assert "| target-q8_0 [GGUF] |" in markdown and note in markdown
    assert "target-q8_0 [GGUF]" in html and note in html
    rows = list(csv.DictReader(io.StringIO(render_csv(board))))
    marked = {row["label"]: row["gguf"] for row in rows}
    assert marked["target-q8_0"].startswith("GGUF file MOSTLY_Q8_0") and marked["target"] == ""
    (methods,) = [c["methods"] for c in json.loads(render_json(board))["corpora"]]
    assert methods[0]["gguf"]["sha256"] == [sha256(path)]
    assert methods[0]["gguf"]["file_types"] == ["MOSTLY_Q8_0"]
