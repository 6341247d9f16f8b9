"""``muse-quant demo`` on the micro world: every output, the headline, reuse, resuming, bad input.

The demo runs in-process once, at fp32 and nf4 only to keep it short (the world and the zoo come
from the test cache), into a folder the module shares; the tests read what it wrote and printed,
then run it again: unchanged (nothing is evaluated) and with one cell removed (only that one is).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
from pathlib import Path

import pytest
from muse_run import cores_for_this_worker

from muse_quant import demo as demo_module
from muse_quant.cli import main
from muse_quant.demo_defaults import DEFAULT_PRECISIONS, REAL_PRECISIONS
from muse_quant.toyworld.build import load_manifest
from muse_quant.toyworld.zoo import build_zoo

PRECISIONS = ("fp32", "relearn-retain-k3", "nf4")  # the board's order
#: The precisions the headline groups runs by; the others each get a line of their own.
QUANTIZED = ("nf4",)
AUDITED = {"npo_gdr_full": "full", "npo_gdr_lora": "lora"}


def run_demo(out: Path, *flags: str) -> tuple[int, str]:
    """The demo's exit status and stdout."""
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = main(["demo", "--scale", "micro", "--out", str(out), "--no-progress", *flags])
    return status, stdout.getvalue()


def results_mtimes(out: Path) -> dict[Path, int]:
    return {path: path.stat().st_mtime_ns for path in (out / "results").rglob("results.json")}


def headline_of(printed: str) -> list[str]:
    """The headline's lines: after its banner, up to the blank line before the paths."""
    after = printed.split("== [6/6]", 1)[1].split("\n", 1)[1]
    return after.split("\n\n", 1)[0].splitlines()


@pytest.fixture(scope="module")
def zoo_labels(micro_world: Path) -> list[str]:
    """The zoo's runs; the zoo built (or found) with this pytest worker's cores."""
    return list(load_manifest(build_zoo(micro_world, workers=cores_for_this_worker()))["runs"])


@pytest.fixture(scope="module")
def demo(zoo_labels: list[str], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The demo's output folder and what it printed, run once for the module (world and zoo
    from the test cache)."""
    out = tmp_path_factory.mktemp("demo") / "out"
    status, printed = run_demo(out, "--precisions", ",".join(PRECISIONS))
    assert status == 0, printed
    return out, printed


def test_demo_writes_board_and_audits(demo: tuple[Path, str], zoo_labels: list[str]) -> None:
    out, printed = demo
    for stage in range(1, 7):
        assert f"== [{stage}/6] " in printed
    board = json.loads((out / "board" / "leaderboard.json").read_text())
    (corpus,) = board["corpora"]
    assert corpus["corpus"] == "news"
    assert corpus["precisions"] == list(PRECISIONS)
    assert (corpus["target"], corpus["retrain"]) == ("target", "retrain")
    assert sorted(m["label"] for m in corpus["methods"]) == sorted(zoo_labels)
    assert (out / "board" / "index.html").is_file()
    assert f"leaderboard: {out / 'board' / 'index.html'}" in printed
    for label, mode in AUDITED.items():
        folder = out / "audits" / label
        report = json.loads((folder / "report.json").read_text())
        assert report["model"] == label
        assert report["evidence"]["methods"][0]["mode"] == mode
        assert [v["precision"] for v in report["verdicts"]] == list(PRECISIONS)
        assert (folder / "report.md").is_file()
        assert str(folder / "report.md") in printed
    assert len(results_mtimes(out)) == (len(zoo_labels) + 2) * len(PRECISIONS)


def test_audits_reuse_the_sweeps_cells(demo: tuple[Path, str]) -> None:
    out, _ = demo
    cells = 3 * len(PRECISIONS)  # the audited run, target and retrain
    log = (out / "results" / "sweep.log").read_text()
    assert log.count(f"sweep of {cells} cells: {cells} finished earlier, 0 to run") == 2
    written = (out / "board" / "leaderboard.json").stat().st_mtime_ns
    assert max(results_mtimes(out).values()) <= written


def test_headline_groups_every_zoo_run(demo: tuple[Path, str], zoo_labels: list[str]) -> None:
    """Each run once, under one group, with the audit's own verdict sentences."""
    out, printed = demo
    lines, *under = "\n".join(headline_of(printed)).split("\n  under ")
    lines = lines.splitlines()
    assert lines[0].startswith(f"news: each run at {', '.join(QUANTIZED)}, compared with")
    groups: dict[str, list[str]] = {}
    texts: dict[str, list[str]] = {}
    group = label = ""
    for line in lines[1:]:
        indent = len(line) - len(line.lstrip())
        if indent == 2:
            group = line.strip().rsplit(":", 1)[0]
            assert line.endswith(f" of {len(zoo_labels)}"), line
        elif indent == 4:
            label = line.split()[0]
            groups.setdefault(group, []).append(label)
            texts[label] = []
        else:
            texts[label].append(line.strip())
    assert sorted(sum(groups.values(), [])) == sorted(zoo_labels)
    assert set(groups) <= {group.format(full="fp32") for group in demo_module.GROUPS.values()}
    for label in groups.get(demo_module.REVERTS, []):
        assert any(text.startswith("reverts at nf4: ") for text in texts[label])
    for label in groups.get(demo_module.HOLDS.format(full="fp32"), []):
        assert texts[label] == []
    for label in AUDITED:
        report = json.loads((out / "audits" / label / "report.json").read_text())
        assert set(texts[label]) <= {v["text"] for v in report["verdicts"]}
    deployments = [p for p in PRECISIONS if p not in ("fp32", *QUANTIZED)]
    assert [block.split(" ", 1)[0] for block in under] == deployments
    words = {"keep their forgetting": "holds", "give it back": "reverts",
             "cannot tell yet": "inconclusive"}  # fmt: skip
    for deployment, block in zip(deployments, under, strict=True):
        found = {}
        for line in block.splitlines()[1:]:
            word, listed = line.strip().split(": ", 1)
            for name in listed.rsplit(": ", 1)[-1].split(", "):
                found[name] = words.get(word, "not judged")
        assert sorted(found) == sorted(zoo_labels)
        for label in AUDITED:
            report = json.loads((out / "audits" / label / "report.json").read_text())
            full, at = (v for v in report["verdicts"] if v["precision"] in ("fp32", deployment))
            expected = at["status"] if full["status"] == "forgets" else "not judged"
            assert found[label] == (expected if expected in words.values() else "not judged")


def test_second_run_evaluates_nothing(demo: tuple[Path, str]) -> None:
    out, printed = demo
    before = results_mtimes(out)
    status, again = run_demo(out, "--precisions", ",".join(PRECISIONS))
    assert status == 0
    assert results_mtimes(out) == before
    assert headline_of(again) == headline_of(printed)


def test_a_killed_run_resumes(demo: tuple[Path, str]) -> None:
    """A cell missing (a run killed before it finished) is the only one evaluated again."""
    out, _ = demo
    before = results_mtimes(out)
    lost = out / "results" / "npo_klr_lora" / "news" / "nf4" / "results.json"
    lost.unlink()
    assert run_demo(out, "--precisions", ",".join(PRECISIONS))[0] == 0
    after = results_mtimes(out)
    assert after.keys() == before.keys()
    assert [path for path in after if after[path] != before[path]] == [lost]


@pytest.mark.parametrize(
    ("case", "flags", "message"),
    [
        ("out_is_a_file", ["--precisions", "fp32"], "not a folder"),
        ("foreign_board", ["--precisions", "fp32"], "is not a muse-quant leaderboard folder"),
        ("no_full_precision", ["--precisions", "nf4,fp4"], "include a full precision"),
        ("unknown_precision", ["--precisions", "fp32,nf5"], "nf5"),
    ],
)
def test_bad_input_is_one_line_before_any_work(
    case: str,
    flags: list[str],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    if case == "out_is_a_file":
        out.write_text("not a folder")
    if case == "foreign_board":
        (out / "board").mkdir(parents=True)
        (out / "board" / "notes.txt").write_text("mine")
    assert main(["demo", "--scale", "micro", "--out", str(out), *flags]) == 2
    captured = capsys.readouterr()
    error = captured.err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("muse-quant: error: "), captured.err
    assert message in error[0]
    assert "== [1/6]" not in captured.out
    assert not (tmp_path / "out" / "results").exists()


@pytest.mark.parametrize(
    ("module", "precision"), [("gptqmodel", "gptq-w4g128"), ("llama_cpp", "gguf-q4_k_m")]
)
def test_an_optional_precision_is_skipped_without_its_library(
    module: str, precision: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """The default list drops it, saying so; a list that asks for it keeps it."""
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == module else find_spec(name, *args),
    )
    for real, default in ((False, DEFAULT_PRECISIONS), (True, REAL_PRECISIONS)):
        expected = tuple(name for name in default if name != precision)
        assert demo_module.demo_precisions(None, real) == expected
        said = f"{precision} skipped, {module} is not installed" in capsys.readouterr().err
        assert said == (precision in default)  # the real world's list has no GPTQ
        assert demo_module.demo_precisions(("fp32", precision), real) == ("fp32", precision)
