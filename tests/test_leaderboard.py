"""The leaderboard: results files in, robustness numbers, ranking and a published board out.

Results files are crafted from a real one (``data/muse_results_target_nf4.json``, written by
``muse-quant eval``), so no model runs here. Every expected number is computed in the test from
the crafted scores, following docs/leaderboard.md.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import os
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness_ext.precision_names import precision_from_model_args, precision_order
from leaderboards.collect import collect_results
from leaderboards.render.board_files import render_all
from leaderboards.render.csv_table import render_csv
from leaderboards.render.json_board import board_to_dict
from leaderboards.render.markdown import escape_cell, escape_markdown, render_markdown
from leaderboards.render.model_index import render_model_index
from leaderboards.render.plots import retention_svg
from leaderboards.robustness import (
    Board,
    ModelScores,
    RobustnessOptions,
    build_board,
    compute_board,
)
from leaderboards.write import write_folder
from muse_quant.cli import main

SAMPLE = json.loads((Path(__file__).parent / "data" / "muse_results_target_nf4.json").read_text())
HOSTILE = "<img src=x onerror=alert(1)>"
#: Chromium flags for a machine without network, display or sandbox.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
CHROMIUM = "/usr/bin/chromium"


def results(
    label: str,
    precision: str,
    scores: tuple[float, float, float, float],
    *,
    role: str | None = "method",
    method: str | None = None,
    corpus: str = "news",
    date: float = 1.0,
) -> dict[str, Any]:
    """The sample results file with ``scores`` = (VerbMem_f, KnowMem_f, KnowMem_r, Min-40% AUC)
    and this label/precision; ``role=None`` writes a foreign file (no ``muse_quant`` key)."""
    data = copy.deepcopy(SAMPLE)
    verbmem, knowmem_f, knowmem_r, auc = scores
    r = data["results"]
    r["muse_news_verbmem_f"]["verbmem_f,none"] = verbmem
    r["muse_news_knowmem_f"]["knowmem_f,none"] = knowmem_f
    r["muse_news_knowmem_r"]["knowmem_r,none"] = knowmem_r
    r["muse_news_privleak"]["auc_mink_40,none"] = auc
    r["muse_news_privleak"]["auc_mink_20,none"] = auc / 2
    per_run = {"pretrained": f"/models/{label}", "precision": precision}
    data["config"]["model_args"] = dict(per_run)
    data["config"]["muse_provenance"]["precision"]["name"] = precision
    for config in data["configs"].values():  # lm-eval merges the model args into the metadata
        for key in SAMPLE["config"]["model_args"]:
            del config["metadata"][key]
        config["metadata"].update(per_run, config_source=f"/elsewhere/{label}.yaml")
    data["date"] = date
    if corpus != "news":  # the same tasks under another corpus' names
        data = json.loads(json.dumps(data).replace("muse_news", f"muse_{corpus}"))
    if role is not None:
        data["muse_quant"] = {
            "schema": 1, "label": label, "role": role, "method": method,
            "mode": "full" if method else None, "corpus": corpus, "precision": precision,
        }  # fmt: skip
    return data


def write(root: Path, data: dict[str, Any], name: str = "results.json") -> Path:
    """Where the sweep puts a cell: ``<label>/<corpus>/<precision>/results.json`` (foreign
    files: ``<pretrained's name>/lm-eval/<precision>/``)."""
    args = data["config"]["model_args"]
    ident = data.get("muse_quant") or {
        "label": args["pretrained"].rsplit("/", 1)[-1], "corpus": "lm-eval",
        "precision": args["precision"],
    }  # fmt: skip
    path = root / ident["label"].replace("/", "_") / ident["corpus"] / ident["precision"] / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


#: label -> role, {precision: scores}. Designed so that the ranking exercises every key.
WORLD = {
    "target": ("target", {"fp32": (80, 60, 50, 0.05), "nf4": (78, 59, 49, 0.06)}),
    "retrain": ("retrain", {"fp32": (20, 15, 48, 0.50), "nf4": (21, 16, 47, 0.52)}),
    # passes C1-C4 at both precisions
    "steady": ("method", {"fp32": (18, 14, 46, 0.49), "nf4": (19, 15, 46, 0.51)}),
    # forgets at fp32, quantization brings it back: fails C1-C3 at nf4
    "reverts": ("method", {"fp32": (10, 8, 47, 0.50), "nf4": (60, 45, 48, 0.10)}),
    # C4 fails (utility < 0.9 x 50) everywhere: 3 criteria; then retention, then utility
    "tie_a": ("method", {"fp32": (10, 6, 40, 0.50), "nf4": (10, 6, 40, 0.52)}),
    "tie_b": ("method", {"fp32": (10, 6, 42, 0.50), "nf4": (10, 6, 42, 0.52)}),
    "tie_c": ("method", {"fp32": (12, 6, 44, 0.50), "nf4": (12, 6, 44, 0.52)}),
    "tie_d": ("method", {"fp32": (10, 6, 42, 0.50), "nf4": (10, 6, 42, 0.52)}),
}


def write_world(root: Path, world: dict = WORLD, foreign: bool = False) -> Path:
    for label, (role, cells) in world.items():
        for precision, scores in cells.items():
            write(root, results(label, precision, scores, role=None if foreign else role))
    return root


@pytest.fixture
def world_dir(tmp_path: Path) -> Path:
    return write_world(tmp_path / "results")


def scores_of(board: Board, label: str) -> ModelScores:
    (corpus,) = board.corpora
    return next(m for m in corpus.methods + corpus.references if m.label == label)


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["leaderboard", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("muse-quant: error: "), err
    for needle in needles:
        assert needle in lines[0]


def no_partial_output(parent: Path, out_name: str) -> bool:
    return not any(p.name.startswith(f".{out_name}.") for p in parent.iterdir())


# --- numbers -------------------------------------------------------------------------------


def test_retention_revert_utility_and_privleak_follow_metrics_md(world_dir: Path) -> None:
    board = build_board(world_dir)
    (corpus,) = board.corpora
    assert (corpus.precisions, corpus.full_precision) == (("fp32", "nf4"), "fp32")
    assert (corpus.target, corpus.retrain) == ("target", "retrain")
    fp32, nf4 = scores_of(board, "reverts").cells
    # target at fp32: VerbMem_f 80, KnowMem_f 60, KnowMem_r 50
    assert nf4.retention_verbmem_f == pytest.approx(60 / 80)
    assert nf4.retention_knowmem_f == pytest.approx(45 / 60)
    assert nf4.forget_retention == pytest.approx(max(60 / 80, 45 / 60))
    assert nf4.revert_verbmem_f == pytest.approx(60 / 80 - 10 / 80)
    assert nf4.revert_knowmem_f == pytest.approx(45 / 60 - 8 / 60)
    assert fp32.revert_verbmem_f == 0.0
    assert nf4.utility_retention == pytest.approx(48 / 50)
    # PrivLeak against the retrain model at the same precision
    assert nf4.privleak == pytest.approx((0.10 - 0.52) / 0.52 * 100)
    assert fp32.privleak == pytest.approx(0.0)
    assert nf4.privleak_reference == "retrain"
    reverts = scores_of(board, "reverts")
    assert reverts.worst_forget_retention == pytest.approx(0.75)
    assert reverts.worst_utility_retention == pytest.approx(47 / 50)


def test_criteria_at_each_precision(world_dir: Path) -> None:
    board = build_board(world_dir)
    marks = {
        (m.label, c.precision): c.criteria.marks()
        for m in board.corpora[0].methods
        for c in m.cells
    }
    assert marks["steady", "fp32"] == (True, True, True, True)
    assert marks["steady", "nf4"] == (True, True, True, True)
    # nf4: 60 > 21, 45 > 16, |PrivLeak| = 80.8 > 5, 48 >= 0.9 x 50
    assert marks["reverts", "nf4"] == (False, False, False, True)
    assert marks["tie_a", "fp32"] == (True, True, True, False)
    reverts = scores_of(board, "reverts")
    assert (reverts.worst_precision, reverts.criteria_passed) == ("nf4", 1)


def test_retrain_missing_at_a_precision_makes_c1_c2_c3_na_there(world_dir: Path) -> None:
    for path in (world_dir / "retrain" / "news" / "nf4").iterdir():
        path.unlink()
    board = build_board(world_dir)
    fp32, nf4 = scores_of(board, "steady").cells
    assert nf4.criteria.marks() == (None, None, None, True) and nf4.privleak is None
    assert fp32.criteria.marks() == (True, True, True, True)
    assert "retrain model has no results at nf4: C1, C2, PrivLeak n/a there" in (
        board.corpora[0].notes
    )


def test_tolerances_are_options(world_dir: Path) -> None:
    """A looser C3 and C4 let 'reverts' pass C3 at nf4 and the tie_* models pass C4."""
    options = RobustnessOptions(privleak_tolerance=81, utility_fraction=0.8)
    board = build_board(world_dir, options)
    assert scores_of(board, "reverts").cells[1].criteria.c3 is True
    assert scores_of(board, "tie_a").cells[0].criteria.c4 is True  # 40 >= 0.8 x 50
    assert scores_of(board, "tie_c").criteria_passed == 4


def test_ranking_is_lexicographic_and_ties_share_a_rank(world_dir: Path) -> None:
    methods = build_board(world_dir).corpora[0].methods
    # steady and reverts forget at fp32 with their utility: ranked first, by worst revert
    # (steady +0.02, reverts +0.62); tie_* lost utility at fp32 (C4): below them whatever their
    # reverts (all 0), then 3 criteria each, then worst utility (tie_c 0.88, tie_b = tie_d
    # 0.84, tie_a 0.80); without per-document scores only equal values tie.
    assert [(m.rank, m.label, m.verdict) for m in methods] == [
        (1, "steady", "holds"), (2, "reverts", "reverts"), (3, "tie_c", "lost utility"),
        (4, "tie_b", "lost utility"), (4, "tie_d", "lost utility"), (6, "tie_a", "lost utility"),
    ]  # fmt: skip


def test_attack_is_selectable(world_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    board = build_board(world_dir, RobustnessOptions(attack="mink_20"))
    nf4 = scores_of(board, "reverts").cells[1]
    assert nf4.privleak == pytest.approx((0.05 - 0.26) / 0.26 * 100)
    code, _, err = run_cli(capsys, world_dir, "--out", world_dir.parent / "b", "--attack", "nope")
    assert_one_line_error(code, err, "'nope'", "mink_40")


def test_full_precision_is_bf16_when_the_target_has_no_fp32(tmp_path: Path) -> None:
    world = {
        "target": ("target", {"bf16": (80, 60, 50, 0.05), "nf4": (70, 50, 45, 0.05)}),
        "m": ("method", {"nf4": (40, 30, 45, 0.4)}),
    }
    board = build_board(write_world(tmp_path, world))
    assert board.corpora[0].full_precision == "bf16"
    assert scores_of(board, "m").cells[0].retention_verbmem_f == pytest.approx(40 / 80)
    assert scores_of(board, "m").cells[0].revert_verbmem_f is None  # m has no bf16 results
    assert "m has no results at bf16" in board.corpora[0].notes


def test_without_retrain_privleak_uses_the_published_auc_and_c1_c2_are_na(tmp_path: Path) -> None:
    world = {k: v for k, v in WORLD.items() if k != "retrain"}
    board = build_board(write_world(tmp_path, world))
    corpus = board.corpora[0]
    nf4 = scores_of(board, "reverts").cells[1]
    assert nf4.privleak == pytest.approx((0.10 - 0.4772) / 0.4772 * 100)
    assert nf4.privleak_reference == "published"
    assert (nf4.criteria.c1, nf4.criteria.c2) == (None, None)
    assert scores_of(board, "steady").criteria_computable == 2
    assert corpus.retrain is None
    assert any("no retrain model" in note and "0.4772" in note for note in corpus.notes)
    markdown = render_markdown(board)
    assert "published Llama-2-7B retrain AUC 0.4772" in markdown
    assert "none in the results (C1, C2 n/a)" in markdown
    given = build_board(tmp_path, RobustnessOptions(retrain_auc=0.4))
    assert scores_of(given, "reverts").cells[1].privleak == pytest.approx((0.10 - 0.4) / 0.4 * 100)


def test_each_corpus_is_its_own_board(world_dir: Path) -> None:
    """Books next to news: its own target, no retrain (MUSE's Books AUC), method name shown."""
    write(world_dir, results("target", "fp32", (90, 70, 60, 0.1), role="target", corpus="books"))
    ga = results("ga", "fp32", (30, 20, 55, 0.45), method="GA+GDR", corpus="books")
    write(world_dir, ga)
    board = build_board(world_dir)
    books, news = board.corpora
    assert (books.corpus, news.corpus) == ("books", "news")
    (method,) = books.methods
    assert (method.label, method.method, method.mode) == ("ga", "GA+GDR", "full")
    assert method.cells[0].retention_verbmem_f == pytest.approx(30 / 90)
    assert method.cells[0].privleak == pytest.approx((0.45 - 0.5393) / 0.5393 * 100)
    assert books.retrain is None and news.retrain == "retrain"
    # C1, C2 n/a; |PrivLeak| = 16.6 > 5 fails C3; 55 >= 0.9 x 60 passes C4
    assert method.cells[0].criteria.marks() == (None, None, False, True)
    # no retrain: C1/C2 n/a, so the verdict is n/a; no quantized precision: no revert
    assert "| 1 | ga | GA+GDR | full | n/a | n/a |  | 1/2 | 91.7% |" in render_markdown(board)


def test_precision_names() -> None:
    assert precision_from_model_args({"precision": "gptq-w4g128"}, None) == "gptq-w4g128"
    four_bit = {"load_in_4bit": "True", "bnb_4bit_quant_type": "nf4"}
    assert precision_from_model_args(four_bit, "torch.float32") == "nf4"
    assert precision_from_model_args({"load_in_4bit": True}, None) == "fp4"
    assert precision_from_model_args({"load_in_8bit": "true"}, None) == "int8"
    assert precision_from_model_args({"dtype": "bfloat16"}, "torch.float32") == "bf16"
    assert precision_from_model_args({}, "torch.float32") == "fp32"
    assert precision_from_model_args({"dtype": "auto"}, None) is None
    names = ["nf4", "rtn-w4g128", "int8", "bf16", "fp32", "gptq-w3g128"]
    assert sorted(names, key=precision_order) == [
        "fp32", "bf16", "int8", "nf4", "rtn-w4g128", "gptq-w3g128",
    ]  # fmt: skip


# --- reading results files ---------------------------------------------------------------


def test_foreign_files_get_labels_from_model_args_and_roles_from_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = write_world(tmp_path / "runs", foreign=True)
    collection = collect_results(root, target="/models/target", retrain="/models/retrain")
    roles = {(row.label, row.precision): row.role for row in collection.rows}
    assert roles["/models/target", "nf4"] == "target"
    assert roles["/models/retrain", "fp32"] == "retrain"
    assert roles["/models/steady", "nf4"] == "method"
    board = compute_board(collection)
    expected = build_board(write_world(tmp_path / "sweep"))
    ours = [(m.rank, m.label.removeprefix("/models/")) for m in board.corpora[0].methods]
    assert ours == [(m.rank, m.label) for m in expected.corpora[0].methods]
    # no --target: refused in one line that says how to mark it
    code, _, err = run_cli(capsys, root, "--out", tmp_path / "board")
    assert_one_line_error(code, err, "no target model for corpus news", "--target LABEL")
    assert not (tmp_path / "board").exists() and no_partial_output(tmp_path, "board")
    code, _, err = run_cli(capsys, root, "--out", tmp_path / "board", "--target", "nope")
    assert_one_line_error(code, err, "--target 'nope'", "/models/target")


def test_the_real_sample_file_reads_as_one_row(tmp_path: Path) -> None:
    # lm-eval's own layout: a folder named after the model path (hidden for .cache/...)
    lm_eval_out = tmp_path / ".cache__muse-quant__toyworld__models__target"
    lm_eval_out.mkdir()
    (lm_eval_out / "results_2026-11-25T12-00-00.json").write_text(json.dumps(SAMPLE))
    (lm_eval_out / "samples_muse_news_verbmem_f_2026.jsonl").write_text("{}\n")
    (row,) = collect_results(tmp_path).rows
    assert row.label == SAMPLE["config"]["model_args"]["pretrained"]
    assert (row.precision, row.corpus, row.role) == ("nf4", "news", "method")
    assert row.verbmem_f == pytest.approx(99.48505102972382)
    assert row.aucs["mink_40"] == 0.0 and "mink++_60" in row.aucs
    assert row.data == SAMPLE["configs"]["muse_news_verbmem_f"]["metadata"]["muse_data"]


def test_duplicate_cells_take_the_newest_and_warn(world_dir: Path) -> None:
    newer = results("steady", "nf4", (30, 30, 46, 0.51), date=2.0)
    write(world_dir, newer, "results_2.json")
    board = build_board(world_dir)
    assert scores_of(board, "steady").cells[1].verbmem_f == 30
    (warning,) = [w for w in board.warnings if "steady / news / nf4" in w]
    assert "steady/news/nf4/results_2.json" in warning and "steady/news/nf4/results.json" in warning


def test_mismatched_task_version_is_refused_naming_both_files(
    world_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    odd = results("steady", "int8", (18, 14, 46, 0.49))
    odd["versions"]["muse_news_knowmem_f"] = 2.0
    odd_path = write(world_dir, odd)
    code, _, err = run_cli(capsys, world_dir, "--out", world_dir.parent / "board")
    assert_one_line_error(code, err, "muse_news_knowmem_f", "version 1.0 vs 2.0", str(odd_path))
    assert str(world_dir / "retrain" / "news" / "fp32" / "results.json") in err  # first read


def test_mismatched_task_config_is_refused_but_per_run_fields_are_not(
    world_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lora = results("steady", "int8", (18, 14, 46, 0.49))
    lora["config"]["model_args"].update(adapter="/runs/npo", emulated=True, merge=True)
    for config in lora["configs"].values():
        config["metadata"].update(adapter="/runs/npo", emulated=True, merge=True)
    write(world_dir, lora)
    assert len(collect_results(world_dir).files) == 17
    odd = results("steady", "fp4", (18, 14, 46, 0.49))
    odd["configs"]["muse_news_verbmem_f"]["generation_kwargs"]["max_gen_toks"] = 64
    odd_path = write(world_dir, odd)
    code, _, err = run_cli(capsys, world_dir, "--out", world_dir.parent / "board")
    assert_one_line_error(
        code, err, "muse_news_verbmem_f", "generation_kwargs.max_gen_toks", str(odd_path)
    )


def test_truncated_json_is_refused_naming_it(
    world_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = world_dir / "late" / "results.json"
    broken.parent.mkdir()
    broken.write_text(json.dumps(results("late", "fp32", (1, 1, 1, 0.5)))[:500])
    code, _, err = run_cli(capsys, world_dir, "--out", world_dir.parent / "board")
    assert_one_line_error(code, err, str(broken), "not valid JSON")
    assert not (world_dir.parent / "board").exists()


def test_foreign_json_is_skipped_with_a_warning_and_alone_is_refused(
    world_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (world_dir / "steady" / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    board = build_board(world_dir)
    assert any("config.json: skipped, not an lm-eval results file" in w for w in board.warnings)
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "other.json").write_text(
        '{"results": {"hellaswag": {}}, "configs": {}, "versions": {}}'
    )
    code, _, err = run_cli(capsys, lone, "--out", tmp_path / "board")
    assert_one_line_error(code, err, "no lm-eval results files with MUSE tasks")


# --- rendering and writing ---------------------------------------------------------------


def test_cli_writes_every_file_and_prints_a_summary(
    world_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = world_dir.parent / "board"
    code, stdout, _ = run_cli(capsys, world_dir, "--out", out)
    assert code == 0
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert names == sorted([
        "index.html", "leaderboard.csv", "leaderboard.json", "leaderboard.md",
        *(f"model-index/{label}.yaml" for label in WORLD),
        *(f"hub/{m}/.eval_results/muse_news_{p}.yaml" for m, (_, c) in WORLD.items() for p in c),
    ])  # fmt: skip
    assert f"leaderboard written to {out}" in stdout
    ranking = [line.split()[:2] for line in stdout.splitlines() if re.match(r"\s+\d+\s", line)]
    assert ranking[0] == ["1", "steady"] and ranking[-1] == ["6", "tie_a"]
    card = yaml.safe_load((out / "model-index" / "reverts.yaml").read_text())
    (result,) = card["model-index"][0]["results"]
    values = {(m["type"], m["args"]["precision"]): m["value"] for m in result["metrics"]}
    assert values["verbmem_f", "nf4"] == 60
    assert values["retention_knowmem_f", "nf4"] == pytest.approx(0.75)
    assert result["dataset"]["type"] == "local"  # the sample was evaluated on a local folder


def test_json_round_trip_matches_the_board_and_the_csv(world_dir: Path) -> None:
    board = build_board(world_dir)
    out = world_dir.parent / "board"
    write_folder(out, render_all(board))
    document = json.loads((out / "leaderboard.json").read_text())
    assert document == json.loads(json.dumps(board_to_dict(board)))
    assert document["schema_version"] == 1 and document["generator"] == "muse-quant leaderboard"
    assert document["options"] == {
        "attack": "mink_40", "privleak_tolerance": 5.0, "utility_fraction": 0.9,
        "retrain_auc": None, "revert_tolerance": 0.1, "certify": None,
    }  # fmt: skip
    (news,) = document["corpora"]
    first = news["methods"][0]
    assert (first["label"], first["rank"], first["criteria_passed"]) == ("steady", 1, 4)
    cell = first["cells"][1]
    assert cell["retention_knowmem_f"] == pytest.approx(15 / 60)
    assert cell["criteria"] == {"c1": True, "c2": True, "c3": True, "c4": True}
    rows = list(csv.DictReader(io.StringIO((out / "leaderboard.csv").read_text())))
    assert len(rows) == sum(len(m["cells"]) for m in news["methods"] + news["references"])
    for method in news["methods"]:
        for cell in method["cells"]:
            (row,) = [
                r
                for r in rows
                if r["label"] == method["label"] and r["precision"] == cell["precision"]
            ]
            assert float(row["utility_retention"]) == cell["utility_retention"]
            assert row["rank"] == str(method["rank"])


def test_board_is_rebuilt_in_place_and_ignores_its_own_folder(
    world_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = world_dir / "board"  # inside the results folder
    assert run_cli(capsys, world_dir, "--out", out)[0] == 0
    first = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    (out / "model-index" / "stale.yaml").write_text("from an older board")
    code, _, err = run_cli(capsys, world_dir, "--out", out)
    assert code == 0 and "leaderboard.json" not in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == first
    assert no_partial_output(world_dir, "board")


def test_out_folder_that_is_not_a_board_is_refused(
    world_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("precious")
    code, _, err = run_cli(capsys, world_dir, "--out", out)
    assert_one_line_error(code, err, str(out), "not a muse-quant leaderboard folder")
    assert [p.name for p in out.iterdir()] == ["chapter1.tex"] and no_partial_output(
        tmp_path, "thesis"
    )


@pytest.mark.parametrize("where", ["under_a_file", "proc"])
def test_unwritable_out_is_one_line_and_leaves_nothing(
    where: str, world_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if where == "under_a_file":
        (tmp_path / "file").write_text("")
        out = tmp_path / "file" / "board"
    else:
        out = Path("/proc/muse-quant-board")
    code, _, err = run_cli(capsys, world_dir, "--out", out)
    assert_one_line_error(code, err, f"--out {out}", "cannot write")  # before reading results
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["results"] + (["file"] if where == "under_a_file" else [])
    )


def test_a_failed_write_keeps_the_previous_board(world_dir: Path) -> None:
    out = world_dir.parent / "board"
    files = render_all(build_board(world_dir))
    write_folder(out, files)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(Exception, match="cannot write the leaderboard"):
        write_folder(out, {**files, "index.html/inside": "x"})  # index.html is a file
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert no_partial_output(out.parent, "board")


def test_strings_from_results_files_are_escaped_everywhere(tmp_path: Path) -> None:
    label = "=HYPERLINK(x)|a*b_[c](d)\n" + HOSTILE
    world = {
        "target": ("target", {"fp32": (80, 60, 50, 0.05)}),
        label: ("method", {"fp32": (18, 14, 46, 0.49)}),
    }
    board = build_board(write_world(tmp_path, world))
    markdown = render_markdown(board)
    tables = [b.splitlines() for b in markdown.split("\n\n") if b.startswith("| ")]
    assert len(tables) == 2
    for table in tables:  # no label opens a cell: each row has as many unescaped pipes
        assert len({len(re.findall(r"(?<!\\)\|", line)) for line in table}) == 1
    assert re.search(r"(?<!\\)<[A-Za-z/]", markdown) is None and escape_cell(label) in markdown
    assert (escape_markdown("a|b<c>"), escape_cell("a|b<c>")) == (r"a|b\<c>", r"a\|b\<c>")
    rows = list(csv.DictReader(io.StringIO(render_csv(board))))
    assert "'" + label in [row["label"] for row in rows]
    (card,) = [t for name, t in render_model_index(board).items() if name != "target.yaml"]
    assert yaml.safe_load(card)["model-index"][0]["name"] == label
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+\.yaml", n) for n in render_model_index(board))
    svg = retention_svg(board.corpora[0])
    svg_texts = ET.fromstring(svg).iter("{http://www.w3.org/2000/svg}text")
    assert {"=HYPERLINK(x)|a*b_[c](d)", HOSTILE} <= {"".join(t.itertext()) for t in svg_texts}
    page = render_all(board)["index.html"]
    assert HOSTILE not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


#: Texts Markdown could read as markup (emphasis, code, links, tags, entities, lists, quotes,
#: headings, table cells), and plain ones it must leave alone.
MARKUP_TEXTS = (
    "KnowMem_f 11.5 > retrain's", "evil|<b>_x</b>", "=HYPERLINK(x)|a*b_[c](d)\n" + HOSTILE,
    "interval [0.30, 0.52] &amp; more", "1. first", "12) x", "- dash", "+ x", "> q", "x #",
    "# h", "a\\", "a\\*b", "x\\|y", "_x_", "(_x_)", "a_b_", "~~s~~", "~s~", "`code`",
    "[a]: http://x", "![i](u)", "[l][r]", "***", "---", "<http://x.y>", "a<!-- c -->",
    "**bold**", "a & b", "&#42;", "-0.5 pp", "a _b_ c", "__init__", "x_ _y",
    '"_load_in_4bit": true, "_load_in_8bit": false',
)


def test_escaped_markdown_renders_as_the_text_and_reads_as_it() -> None:
    """Each text, escaped, renders (CommonMark with GFM tables and strikethrough, markdown-it)
    as exactly that text, in every place the renderers put one; plain text is left as it is."""
    markdown_it = pytest.importorskip("markdown_it", reason="markdown-it-py renders the check")
    md = markdown_it.MarkdownIt("commonmark").enable(["table", "strikethrough"])

    def html(text: str) -> str:
        return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace(
            '"', "&quot;"
        )

    for text in MARKUP_TEXTS:
        shown, line, cell = html(" ".join(text.split())), escape_markdown(text), escape_cell(text)
        assert md.render(line) == f"<p>{shown}</p>\n", text
        assert md.render(f"- {line}") == f"<ul>\n<li>{shown}</li>\n</ul>\n", text
        assert md.render(f"**{line}**") == f"<p><strong>{shown}</strong></p>\n", text
        assert md.render(f"# Audit: {line}") == f"<h1>Audit: {shown}</h1>\n", text
        table = md.render(f"| h |\n|---|\n| {cell} |")
        assert f"<tbody>\n<tr>\n<td>{shown}</td>\n</tr>\n</tbody>" in table, text
    plain_texts = (
        "KnowMem_f 11.5 > retrain's", "snake_case_name", "[0.30, 0.52]", "-0.5 pp", "x_ _y",
        '{"_load_in_4bit": true, "_load_in_8bit": false}',
    )
    for plain in plain_texts:
        assert escape_markdown(plain) == plain
    assert escape_markdown("a _b_ c") == r"a \_b\_ c"


def test_help_shows_a_real_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["leaderboard", "--help"])
    text = capsys.readouterr().out
    assert "muse-quant leaderboard results/ --out board/" in text
    assert "--privleak-tolerance" in text and "default: 5.0" in text


# --- the page in a browser ---------------------------------------------------------------


def test_page_renders_sorts_and_shows_hostile_labels_as_text(tmp_path: Path) -> None:
    if not os.access(CHROMIUM, os.X_OK):
        reason = f"{CHROMIUM} missing: `make test` installs it as root (apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    sync_api = pytest.importorskip("playwright.sync_api")
    world = dict(WORLD)
    # lost utility at fp32 (43 < 0.9 x 50): below the two that kept it, then by worst utility
    # (tie_c 0.88, this one 0.86, tie_b = tie_d 0.84, tie_a 0.80)
    world[HOSTILE] = ("method", {"fp32": (9, 7, 43, 0.5), "nf4": (9, 7, 43, 0.52)})
    out = tmp_path / "board"
    write_folder(out, render_all(build_board(write_world(tmp_path / "results", world))))
    dialogs, requests, errors = [], [], []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.on("request", lambda r: requests.append(r.url))
            page.on("console", lambda m: m.type == "error" and errors.append(m.text))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto((out / "index.html").as_uri())
            ranking = page.locator("table.sortable").first
            labels = ranking.locator("tbody tr td:nth-child(2)")
            assert labels.all_inner_texts() == [
                "steady", "reverts", "tie_c", HOSTILE, "tie_b", "tie_d", "tie_a",
            ]  # fmt: skip
            # Every table fits a 1400 px window: no horizontal scrolling.
            widths = page.evaluate(
                "() => [...document.querySelectorAll('div.scroll')]"
                ".map(d => [d.scrollWidth, d.clientWidth])"
            )
            assert widths and all(scroll <= client for scroll, client in widths), widths
            ranking.locator("th", has_text="Worst utility retention").click()
            utility = ranking.locator("tbody tr td:nth-child(9)").all_inner_texts()
            assert utility == sorted(utility, key=lambda t: float(t.rstrip("%")))
            assert utility[0] == "80.0%" and labels.all_inner_texts()[0] == "tie_a"
            ranking.locator("th", has_text="Worst utility retention").click()
            assert labels.all_inner_texts()[0] == "reverts"  # 94.0%, descending
            ranking.locator("th", has_text="Model").click()
            assert labels.all_inner_texts()[0] == HOSTILE  # "<" sorts before letters
            assert page.locator("img").count() == 2  # the two plots; the label made none
            page.screenshot(path=tmp_path / "leaderboard.png", full_page=True)
        finally:
            browser.close()
    assert dialogs == [] and errors == []
    assert all(url.startswith(("file:", "data:")) for url in requests), requests
    assert (tmp_path / "leaderboard.png").stat().st_size > 10_000


def test_a_cell_a_killed_sweep_did_not_publish_is_not_read(world_dir: Path) -> None:
    """A complete staging copy (``.nf4.building-*``: the sweep died before renaming it) and a
    retired one (``.nf4.old-PID``) of a cell are no results: the board reads the published
    cells only, as if the copies were not there."""
    before = collect_results(world_dir)
    cell = world_dir / "reverts" / "news" / "nf4"
    assert cell.is_dir()
    for name in (".nf4.building-k2j4h1xz", ".nf4.old-4242"):
        staged = cell.with_name(name)
        shutil.copytree(cell, staged)
        data = json.loads((staged / "results.json").read_text())
        data["results"]["muse_news_verbmem_f"]["verbmem_f,none"] = 99.0
        (staged / "results.json").write_text(json.dumps(data))
    after = collect_results(world_dir)
    assert after.files == before.files
    assert after.rows == before.rows
