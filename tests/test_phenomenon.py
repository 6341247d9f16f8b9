"""``bench/phenomenon.py``, the seeds' experiment, on the micro world: its pipeline (zoo, one
sweep, the board's rule, the table), not its result, which is the real world's
(docs/unlearning.md). One seed and two precisions keep it to a minute; the board's seed groups
and durability rate are tested with the board (tests/test_leaderboard.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from muse_run import cores_for_this_worker, run_tasks

from bench.phenomenon import main, run
from bench.results import flat_metrics
from leaderboards.verdicts import LOST_UTILITY, NEVER_FORGOT
from muse_quant.toyworld.zoo import build_zoo

#: What a cell of the table may say: the verdict at that precision, or the full-precision gate's.
VERDICTS = ("holds", "reverts", "inconclusive", "n/a", NEVER_FORGOT, LOST_UTILITY)


@pytest.fixture(scope="module")
def experiment(micro_world: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    build_zoo(micro_world, workers=cores_for_this_worker())  # the suite's cached zoo
    out = tmp_path_factory.mktemp("phenomenon") / "out"
    return run("micro", (0,), ("fp32", "nf4"), out, threads=1, progress=False), out


def _rows(table: str) -> dict[str, list[str]]:
    rows = [line.strip("|").split(" | ") for line in table.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows[1:]}


def test_every_run_has_its_revert_and_changed_codes(
    experiment: tuple[str, Path], micro_world: Path
) -> None:
    table, out = experiment
    zoo = build_zoo(micro_world)
    manifest = json.loads((zoo / "manifest.json").read_text())
    rows = _rows(table)
    assert set(rows) == {f"{label}-s0" for label in manifest["runs"]}
    for label, run_record in manifest["runs"].items():
        revert, nf4_codes, q4k_codes = rows[f"{label}-s0"]
        assert revert.endswith(VERDICTS), revert
        assert nf4_codes == f"{run_record['changed_codes']['nf4']:.1%}"
        assert q4k_codes == f"{run_record['changed_codes']['gguf-q4_k']:.1%}"
    assert (out / "board" / "index.html").is_file()


def test_the_revert_is_what_the_tasks_give(experiment: tuple[str, Path], micro_world: Path):
    """The confined control's revert at NF4, from VerbMem_f evaluated here through lm-eval
    (NF4 emulated: bitsandbytes' own weights): retention at nf4 minus retention at fp32, both
    over the target's fp32 VerbMem_f."""
    table, _ = experiment
    zoo = build_zoo(micro_world)
    control = zoo / "npo_gdr_full_nf4confined"
    data, target = micro_world / "data", micro_world / "models" / "target"

    def verbmem(model: Path, precision: str) -> float:
        args = {"precision": precision, "emulated": precision != "fp32"}
        results = run_tasks(model, data, ["muse_news_verbmem_f"], model_args=args)
        return flat_metrics(results)["verbmem_f"]

    expected = (verbmem(control, "nf4") - verbmem(control, "fp32")) / verbmem(target, "fp32")
    printed = float(_rows(table)["npo_gdr_full_nf4confined-s0"][0].split()[0])
    assert printed == pytest.approx(expected, abs=0.006)
    assert printed > 0.2  # the control reverts (tests/test_zoo.py measures it)


def test_a_board_it_did_not_write_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    board = tmp_path / "out" / "board"
    board.mkdir(parents=True)
    (board / "notes.txt").write_text("mine")
    assert main(["--scale", "micro", "--seeds", "0", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("phenomenon: error: ")
    assert (board / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "out" / "results").exists()


def test_an_unknown_precision_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--scale", "micro", "--precisions", "fp32,nf5", "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nf5" in err[0] and "nf4" in err[0]  # the closest known name
    assert not (tmp_path / "out").exists()
