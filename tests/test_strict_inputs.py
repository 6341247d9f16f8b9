"""Strict inputs: a typo, a wrong base, a shared data folder or a damaged score is a one-line
error with exit 2 before any work, nothing partial is written and nothing finished is lost."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from test_audit import audit_args
from test_cli_eval import eval_args, one_line_exit_2, written_files
from test_leaderboard import assert_one_line_error, results, run_cli, write, write_world
from test_loading import make_adapter

from harness_ext.errors import MuseQuantError
from model_wrappers.loading import load_causal_lm
from muse_quant.cli import main
from muse_quant.sweep import plan_from_dict

# --------------------------------------------------------------------------- model arguments


@pytest.mark.parametrize(
    ("model_args", "expected"),
    [
        ("precison=nf4", "unknown argument precison (did you mean 'precision'?)"),
        ("precision=nf4,double_qaunt=true", "unknown argument double_qaunt (did you mean"),
        ("adaptor=/x", "unknown argument adaptor (did you mean 'adapter'?)"),
    ],
)
def test_a_mistyped_model_argument_is_refused(
    micro_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture, model_args: str,
    expected: str,
) -> None:  # fmt: skip
    argv = eval_args(micro_world, tmp_path / "out", "--tasks", "muse_news_knowmem_r")
    i = argv.index("--model_args") + 1
    argv[i] = f"{argv[i]},{model_args}"
    one_line_exit_2(capsys, argv, expected)
    assert written_files(tmp_path / "out") == []


def test_an_output_path_that_cannot_be_written_is_refused_before_the_run(
    micro_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "a_file").write_text("x")
    argv = eval_args(micro_world, tmp_path / "a_file" / "out", "--tasks", "muse_news_knowmem_r")
    one_line_exit_2(capsys, argv, "--output_path", "a_file is not a folder")
    assert (tmp_path / "a_file").read_text() == "x"


def test_results_lm_eval_failed_to_save_are_a_non_zero_exit(
    micro_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """lm-eval only warns when it cannot save ("Could not save results"): exit 2, not 0."""
    from lm_eval.loggers import EvaluationTracker

    monkeypatch.setattr(EvaluationTracker, "save_results_aggregated", lambda *a, **k: None)
    argv = eval_args(
        micro_world, tmp_path / "out", "--tasks", "muse_news_knowmem_r", "--limit", "2"
    )
    one_line_exit_2(capsys, argv, "lm-eval could not save the results")


def test_one_data_folder_cannot_serve_two_corpora(
    micro_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = eval_args(micro_world, tmp_path / "out", "--tasks", "muse_news,muse_books")
    one_line_exit_2(capsys, argv, "is one corpus, but the tasks ask for books and news")
    assert written_files(tmp_path / "out") == []
    models = [{"label": "t", "role": "target", "pretrained": str(micro_world / "models/target")}]
    data = str(micro_world / "data")
    plan = plan_from_dict(
        {"corpora": {"news": data, "books": data}, "precisions": ["fp32"], "models": models},
        tmp_path,
    )
    with pytest.raises(MuseQuantError, match="news and books both read .*is one corpus"):
        plan.cells()


# --------------------------------------------------------------------------- adapters


@pytest.fixture(scope="module")
def lora(micro_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An adapter trained (initialised) on the world's target, as peft records it."""
    base = load_causal_lm(str(micro_world / "models" / "target"))[0]
    return make_adapter(base, tmp_path_factory.mktemp("lora") / "adapter")


def test_an_adapter_on_another_base_is_refused_unless_allowed(
    micro_world: Path, lora: Path, tmp_path: Path
) -> None:
    target, retrain = micro_world / "models" / "target", micro_world / "models" / "retrain"
    model, provenance = load_causal_lm(str(target), adapter=str(lora))
    assert provenance["adapter"]["base"].startswith("matches the name the adapter records")
    with pytest.raises(MuseQuantError) as err:  # same shapes, another base
        load_causal_lm(str(retrain), adapter=str(lora))
    message = str(err.value)
    assert "\n" not in message and f"pretrained={retrain}" in message and str(target) in message
    assert "allow_other_base=true" in message
    _, provenance = load_causal_lm(str(retrain), adapter=str(lora), allow_other_base=True)
    assert provenance["adapter"]["base"].startswith("OVERRIDDEN (allow_other_base=true)")
    assert str(target) in provenance["adapter"]["base"]


def test_a_plan_allows_another_base_only_when_it_says_so(
    micro_world: Path, lora: Path, tmp_path: Path
) -> None:
    """The plan's ``allow_other_base`` is the model argument: refused without, recorded with."""
    from muse_quant.sweep import plan_jobs

    def plan(**extra: object) -> object:
        method = {"label": "m", "role": "method", "pretrained": str(micro_world / "models/retrain"),
                  "adapter": str(lora)} | extra  # fmt: skip
        return plan_from_dict({
            "corpora": {"news": str(micro_world / "data")},
            "precisions": ["fp32"],
            "options": {"device": "cpu"},
            "models": [{"label": "t", "role": "target",
                        "pretrained": str(micro_world / "models/target")}, method],
        }, tmp_path)  # fmt: skip

    with pytest.raises(MuseQuantError, match="allow_other_base=true"):
        plan_jobs(plan(), tmp_path / "results")
    job = plan_jobs(plan(allow_other_base=True), tmp_path / "results")[1]
    assert job.model_kwargs()["allow_other_base"] is True
    assert job.model_args["allow_other_base"] is True and not (tmp_path / "results").exists()


def test_an_unlearning_runs_adapter_is_checked_by_its_base_weights(
    micro_world: Path, lora: Path, tmp_path: Path
) -> None:
    """``muse-quant unlearn`` records the base's weight hashes: the check is exact, even when
    the base folder was copied elsewhere (same weights) or peft's recorded name is stale."""
    target = micro_world / "models" / "target"
    adapter = Path(shutil.copytree(lora, tmp_path / "run"))
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "/nowhere/else"
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    hashes = json.loads((target.parent.parent / "manifest.json").read_text())["files"]
    weights = {"model.safetensors": hashes["models/target/model.safetensors"]}
    (adapter / "unlearn.json").write_text(json.dumps({"target": {"sha256": weights}}))
    moved = Path(shutil.copytree(target, tmp_path / "moved-target"))
    _, provenance = load_causal_lm(str(moved), adapter=str(adapter))
    assert provenance["adapter"]["base"] == "matches the sha256 the adapter records"
    with pytest.raises(MuseQuantError, match="trained on another base"):
        load_causal_lm(str(micro_world / "models" / "retrain"), adapter=str(adapter))


# --------------------------------------------------------------------------- results files


@pytest.mark.parametrize(
    ("value", "key"),
    [("12.5", "verbmem_f,none"), (math.nan, "knowmem_f,none"), (-5.0, "knowmem_f,none"),
     (101.0, "knowmem_r,none")],
)  # fmt: skip
def test_the_board_refuses_a_score_that_is_not_a_score(
    tmp_path: Path, capsys: pytest.CaptureFixture, value: object, key: str
) -> None:
    root = write_world(tmp_path / "results")
    bad = results("bad", "fp32", (10, 5, 40, 0.5), method="GA")
    task = f"muse_news_{key.split(',')[0]}"
    bad["results"][task][key] = value
    path = write(root, bad)
    code, _, err = run_cli(capsys, str(root), "--out", str(tmp_path / "board"))
    assert_one_line_error(code, err, str(path), f"{task} {key}")
    assert not (tmp_path / "board").exists()


# --------------------------------------------------------------------------- folders


@pytest.fixture(scope="module")
def candidate(micro_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A third party's model: the retrain model's files under another name."""
    folder = tmp_path_factory.mktemp("third-party") / "candidate"
    return Path(shutil.copytree(micro_world / "models" / "retrain", folder))


def test_the_zoo_never_replaces_a_folder_it_did_not_make(
    micro_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    argv = ["toyworld", "zoo", "--world", str(micro_world), "--out", str(mine)]
    assert main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "is a non-empty folder that is not a zoo" in line
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_a_cell_folder_holding_other_files_is_refused(
    micro_world: Path, candidate: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    cell = tmp_path / "results" / "candidate" / "news" / "fp32"
    cell.mkdir(parents=True)
    (cell / "notes.txt").write_text("keep me")
    argv = audit_args(micro_world, candidate, tmp_path / "audit")
    argv += ["--results", str(tmp_path / "results")]
    assert main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "holds files a sweep did not write (notes.txt)" in line
    assert [p.name for p in cell.iterdir()] == ["notes.txt"]
    assert not (tmp_path / "audit").exists()


def test_audits_reuse_a_sweeps_cells_and_never_overwrite_another_runs(
    micro_world: Path, candidate: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    models = micro_world / "models"
    shared = ("--results", str(tmp_path / "results"), "--label", "candidate")
    first = audit_args(micro_world, candidate, tmp_path / "a1", *shared, "--method", "X")
    assert main(first) in (0, 1)
    files = sorted((tmp_path / "results").rglob("results.json"))
    assert len(files) == 6
    stamps = [f.stat().st_mtime_ns for f in files]
    # Without --method: the method those cells record is used, so they are reused.
    assert main(audit_args(micro_world, candidate, tmp_path / "a2", *shared)) in (0, 1)
    assert [f.stat().st_mtime_ns for f in files] == stamps
    (method,) = json.loads((tmp_path / "a2" / "report.json").read_text())["evidence"]["methods"]
    assert method["method"] == "X"
    # Another model under the same label: refused, nothing rewritten.
    other = Path(shutil.copytree(models / "target", tmp_path / "other"))
    capsys.readouterr()
    assert main(audit_args(micro_world, other, tmp_path / "a3", *shared)) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "holds another run's result" in line and "not overwritten" in line
    assert [f.stat().st_mtime_ns for f in files] == stamps
    assert not (tmp_path / "a3").exists()


@pytest.mark.parametrize("label", ["retrain", "target"])
def test_an_audited_model_cannot_take_a_references_label(
    micro_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture, label: str
) -> None:
    model = Path(shutil.copytree(micro_world / "models" / "retrain", tmp_path / label))
    assert main(audit_args(micro_world, model, tmp_path / "audit")) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"label '{label}' is the {label} reference's" in line and "--label" in line
    assert not (tmp_path / "audit").exists()


@pytest.mark.parametrize("argument", ["merge=flase", "prefix_cache=maybe", "emulated=ture"])
def test_a_flag_that_is_neither_true_nor_false_is_refused(
    argument: str, micro_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """``merge=flase`` is an error naming the argument, never a silent ``True``."""
    argv = eval_args(micro_world, tmp_path / "out", "--tasks", "muse_news_knowmem_r")
    i = argv.index("--model_args") + 1
    argv[i] = f"{argv[i]},{argument}"
    one_line_exit_2(capsys, argv, f"{argument}: expected true or false")


# --------------------------------------------------------------------------- refused, none written


def refused(capsys: pytest.CaptureFixture, argv: list[str], *expected: str) -> str:
    """Exit 2 and exactly one line on stderr, the project's error naming each of ``expected``
    (argparse's own errors too)."""
    try:
        code = main(argv)
    except SystemExit as e:  # argparse exits by itself
        code = e.code
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    line = lines[-1]
    assert len(lines) == 1, lines
    assert line.startswith(("muse-quant: error: ", "muse-quant ")) and "error: " in line, line
    for text in expected:
        assert text in line, line
    return line


def tree(*folders: Path) -> dict[Path, tuple[int, int]]:
    """Every path under ``folders`` with its size and modification time: a refusal changes none
    (a folder's time changes when anything is made or removed in it)."""
    paths = [p for f in folders if f.exists() for p in (f, *f.rglob("*"))]
    return {p: (p.lstat().st_size, p.lstat().st_mtime_ns) for p in paths}


def unlearn_args(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["unlearn", "--model", str(model), "--data", str(data), "--method", "ga",
            "--out", str(out), "--max-steps", "1", "--param-dtype", "fp32", *extra]  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--retain-weight", "-1"], "--retain-weight -1.0: must be >= 0"),
        (["--lr", "0"], "--lr 0.0: must be > 0"),
        (["--lr", "nan"], "--lr nan: must be > 0"),
        (["--lr", "inf"], "--lr inf: must be > 0"),
        (["--max-steps", "0"], "--max-steps 0: must be >= 1"),
        (["--batch-size", "-2"], "--batch-size -2: must be >= 1"),
        (["--max-length", "1"], "--max-length 1: must be >= 2"),
        (["--seed", "-1"], "--seed -1: must be in [0, 2**32 - 1]"),
        (["--check-every", "-5"], "--check-every -5: must be >= 0"),
        (["--stop-verbmem", "0.5"], "--stop-verbmem needs --check-every N"),
        (["--stop-knowmem", "0.1"], "--stop-knowmem needs --check-every N"),
        (["--check-every", "0", "--stop-verbmem", "0"], "--stop-verbmem needs --check-every"),
        (["--check-every", "2", "--stop-verbmem", "1.5"], "--stop-verbmem 1.5: must be in [0, 1]"),
        (["--check-every", "2", "--stop-knowmem", "-1"], "--stop-knowmem -1.0: must be in [0, 1]"),
        (["--mode", "lora", "--lora-dropout", "1"], "--lora-dropout 1.0: must be in [0, 1)"),
        (["--mode", "lora", "--lora-r", "0"], "--lora-r 0: must be >= 1"),
        (["--mode", "lora", "--lora-alpha", "0"], "--lora-alpha 0: must be > 0"),
        (["--method", "npo", "--beta", "0"], "--beta 0.0: must be > 0"),
        (["--method", "npo", "--beta=-inf"], "--beta -inf: must be > 0"),
        (["--salient-fraction", "0"], "--salient-fraction 0.0: must be in (0, 1]"),
        (["--salient-fraction", "1.5"], "--salient-fraction 1.5: must be in (0, 1]"),
        (["--beta", "0.2"], "--beta is for --method npo"),
        (["--lora-r", "8"], "--lora-r is for --mode lora"),
        (["--retain-loss", "none", "--retain-weight", "2"], "--retain-weight is for --retain-loss"),
        (["--max-length", "513"], "--max-length 513: longer than the 512 positions"),
        (["--lr", "fast"], "argument --lr: invalid float value"),
        (["--max-steps", "1.5"], "argument --max-steps: invalid int value"),
    ],
)
def test_unlearn_refuses_a_hyperparameter_out_of_range_or_meaningless(
    micro_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str],
    expected: str,
) -> None:  # fmt: skip
    """Every numeric hyperparameter has a range (NaN and infinity in none), and a flag the run
    would ignore (early stopping without checks, NPO's beta on GA) is refused, not ignored."""
    before = tree(tmp_path)
    argv = unlearn_args(micro_world / "models/target", micro_world / "data", tmp_path / "out")
    refused(capsys, argv + extra, expected)
    assert tree(tmp_path) == before


@pytest.mark.parametrize(
    ("flag", "value", "extra", "remove", "expected"),
    [
        ("--model", "nope", [], None, "--model {tmp}/nope: no such folder"),
        ("--model", "file", [], None, "--model {tmp}/file: is a file"),
        ("--model", "empty", [], None, "no config.json in {tmp}/empty"),
        ("--data", "nope", [], None, "--data {tmp}/nope: no such folder"),
        ("--data", "file", [], None, "--data {tmp}/file: is a file"),
        ("--out", "file", [], None, "--out {tmp}/file is a file"),
        ("--out", "file/run", [], None, "{tmp}/file is not a folder"),
        ("--out", "model/run", [], None, "--out {tmp}/model/run and --model {tmp}/model overlap"),
        ("--out", "data", [], None, "--out {tmp}/data and --data {tmp}/data overlap"),
        ("--out", "", [], None, "--out is empty"),
        ("--model", "", [], None, "--model is empty"),
        (None, None, ["--check-every", "1"], "verbmem/forget.json",
         "--check-every: {tmp}/data/verbmem/forget.json is missing"),
        (None, None, ["--check-every", "1", "--stop-knowmem", "0.1"], "knowmem/forget_qa.json",
         "--stop-knowmem: {tmp}/data/knowmem/forget_qa.json is missing"),
    ],
)  # fmt: skip
def test_unlearn_refuses_bad_paths_before_any_work(
    micro_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture, flag: str | None,
    value: str | None, extra: list[str], remove: str | None, expected: str,
) -> None:  # fmt: skip
    """Missing, file-for-folder, unwritable or overlapping paths, and data early stopping cannot
    score: one line each, before the model loads, and nothing made or removed."""
    model = Path(shutil.copytree(micro_world / "models/target", tmp_path / "model"))
    data = Path(shutil.copytree(micro_world / "data", tmp_path / "data"))
    (tmp_path / "file").write_text("x")
    (tmp_path / "empty").mkdir()
    if remove is not None:
        (data / remove).unlink()
    argv = unlearn_args(model, data, tmp_path / "out", *extra)
    if flag is not None:
        argv[argv.index(flag) + 1] = str(tmp_path / value) if value else ""
    before = tree(tmp_path)
    refused(capsys, argv, expected.format(tmp=tmp_path))
    assert tree(tmp_path) == before


@pytest.mark.parametrize(
    ("record", "files", "expected"),
    [
        (None, ["notes.txt"], "holds notes.txt but no unlearning run"),
        ({"kind": "something else"}, ["notes.txt"], "holds notes.txt"),
        ({"kind": "muse-quant unlearning run", "files": ["model.safetensors", "unlearn.json"]},
         ["model.safetensors", "notes.txt", "sub/more.txt"],
         "holds notes.txt and 1 more, which its run did not write"),
    ],
)  # fmt: skip
def test_unlearn_overwrite_replaces_only_a_run_it_wrote(
    micro_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture, record: dict | None,
    files: list[str], expected: str,
) -> None:  # fmt: skip
    """``--overwrite`` on a folder with a user's files: refused, naming a file; nothing goes."""
    out = tmp_path / "out"
    for name in files:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text("keep me")
    if record is not None:
        (out / "unlearn.json").write_text(json.dumps(record))
    before = tree(tmp_path)
    argv = unlearn_args(micro_world / "models/target", micro_world / "data", out, "--overwrite")
    refused(capsys, argv, f"--out {out}", expected)
    assert tree(tmp_path) == before


# --------------------------------------------------------------------------- leaderboard


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--utility-fraction", "1.5", "utility fraction 1.5: must be in (0, 1]"),
        ("--utility-fraction", "0", "utility fraction 0.0: must be in (0, 1]"),
        ("--utility-fraction", "nan", "utility fraction nan: must be in (0, 1]"),
        ("--privleak-tolerance", "-1", "PrivLeak tolerance -1.0: must be >= 0 and finite"),
        ("--privleak-tolerance", "inf", "PrivLeak tolerance inf: must be >= 0 and finite"),
        ("--revert-tolerance", "nan", "revert tolerance nan: must be >= 0 and finite"),
        ("--revert-tolerance", "-0.5", "revert tolerance -0.5: must be >= 0"),
        ("--retrain-auc", "0", "retrain AUC 0.0: must be in (0, 1]"),
        ("--retrain-auc", "1.5", "retrain AUC 1.5: must be in (0, 1]"),
        ("--attack", "mink40", "attack 'mink40' (did you mean 'mink_40'?)"),
        ("--target", "", "--target is empty"),
        ("--out", "", "argument --out: an empty path"),
    ],
)
def test_leaderboard_refuses_an_option_out_of_range(
    tmp_path: Path, capsys: pytest.CaptureFixture, flag: str, value: str, expected: str
) -> None:
    root = write_world(tmp_path / "results")
    before = tree(tmp_path)
    refused(capsys, ["leaderboard", str(root), "--out", str(tmp_path / "board"), flag, value],
            expected)  # fmt: skip
    assert tree(tmp_path) == before


@pytest.mark.parametrize(
    ("extra", "named"),
    [("notes.txt", "notes.txt"), (".git/config", ".git"),
     ("model-index/mine.txt", "model-index/mine.txt")],
)  # fmt: skip
def test_a_board_over_a_previous_one_keeps_the_users_files(
    tmp_path: Path, capsys: pytest.CaptureFixture, extra: str, named: str
) -> None:
    """A previous board's folder is replaced whole only when it holds nothing else: a user's
    file in it is refused by name, before the results are read, and kept."""
    root = write_world(tmp_path / "results")
    board = tmp_path / "board"
    assert run_cli(capsys, str(root), "--out", str(board))[0] == 0
    (board / extra).parent.mkdir(exist_ok=True)
    (board / extra).write_text("mine")
    before = tree(tmp_path)
    refused(capsys, ["leaderboard", str(root), "--out", str(board)],
            f"--out {board} holds {named}, which the board did not write")  # fmt: skip
    assert tree(tmp_path) == before


@pytest.mark.parametrize(
    ("out", "expected"),
    [("results", "is the results folder itself"), (".", "holds the results folder")],
)
def test_a_board_is_not_written_over_its_results(
    tmp_path: Path, capsys: pytest.CaptureFixture, out: str, expected: str
) -> None:
    root = write_world(tmp_path / "results")
    before = tree(tmp_path)
    refused(capsys, ["leaderboard", str(root), "--out", str(tmp_path / out)], expected)
    assert tree(tmp_path) == before


# --------------------------------------------------------------------------- audit


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--no-merge"], "--no-merge is for an adapter (--adapter PATH)"),
        (["--batch-size", "0"], "--batch-size 0: documents per batch, >= 1"),
        (["--revert-tolerance", "nan"], "revert tolerance nan: must be >= 0 and finite"),
        (["--revert-tolerance", "inf"], "revert tolerance inf: must be >= 0 and finite"),
        (["--label", ""], "--label is empty"),
        (["--method", " "], "--method is empty"),
        (["--calibration", "news"], "--calibration is for calibrated precisions"),
        (["--label", "x" * 256], "the label is 256 bytes, more than the 255"),
        (["--results", ""], "argument --results: an empty path"),
    ],
)
def test_audit_refuses_options_that_mean_nothing_or_are_out_of_range(
    micro_world: Path, candidate: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
    extra: list[str], expected: str,
) -> None:  # fmt: skip
    before = tree(tmp_path)
    refused(capsys, audit_args(micro_world, candidate, tmp_path / "audit", *extra), expected)
    assert tree(tmp_path) == before


@pytest.mark.parametrize(
    ("flag", "inside", "expected"), [("--out", "model", "is inside --model"),
                                     ("--results", "target", "is inside --target")]
)  # fmt: skip
def test_audit_writes_nothing_inside_what_it_reads(
    micro_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture, flag: str, inside: str,
    expected: str,
) -> None:  # fmt: skip
    model = Path(shutil.copytree(micro_world / "models" / "retrain", tmp_path / "model"))
    target = Path(shutil.copytree(micro_world / "models" / "target", tmp_path / "target"))
    argv = audit_args(micro_world, model, tmp_path / "audit", "--target", str(target))
    argv += [flag, str(tmp_path / inside / "out")]
    before = tree(tmp_path)
    refused(capsys, argv, f"{flag} {tmp_path / inside / 'out'} {expected}")
    assert tree(tmp_path) == before


@pytest.mark.parametrize("where", ["results", "results/report"])
def test_an_audit_report_is_not_put_among_its_cells(
    micro_world: Path, candidate: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
    where: str,
) -> None:  # fmt: skip
    out, results = tmp_path / where, tmp_path / "results"
    argv = audit_args(micro_world, candidate, out, "--results", str(results))
    before = tree(tmp_path)
    refused(capsys, argv, f"--out {out} is", "the results folder")
    assert tree(tmp_path) == before


def test_a_corrupt_adapter_config_is_reported_as_not_json(
    micro_world: Path, lora: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Not "does not fit its base": the file is named, and what is wrong with it."""
    adapter = Path(shutil.copytree(lora, tmp_path / "adapter"))
    (adapter / "adapter_config.json").write_text('{"r": 8,')
    before = tree(tmp_path)
    argv = audit_args(micro_world, micro_world / "models" / "target", tmp_path / "audit",
                      "--adapter", str(adapter), "--label", "lora")  # fmt: skip
    refused(capsys, argv, f"{adapter / 'adapter_config.json'} is not valid JSON")
    assert tree(tmp_path) == before


# --------------------------------------------------------------------------- sweep plans


def plan_with(world: Path, label: str = "target", **options: object) -> dict:
    models = [{"label": label, "role": "target", "pretrained": str(world / "models/target")},
              {"label": "retrain", "role": "retrain", "pretrained": str(world / "models/retrain")}]
    return {"corpora": {"news": str(world / "data")}, "precisions": ["fp32", "nf4"],
            "options": {"device": "cpu", "emulated": True} | options, "models": models}  # fmt: skip


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"label": "x" * 300}, "the label is 300 bytes, more than the 255"),
        ({"label": "x" * 256}, "the label is 256 bytes"),
        ({"label": "a b"}, "a label is a folder name"),
        ({"precisions": ["rtn-w4g" + "1" * 240]}, "more than the 236"),
        ({"precisions": [{"name": "nf4", "calibration": "news"}]}, "nf4 takes no calibration"),
        ({"threads": 0}, "threads=0: a positive whole number"),
        ({"threads": -2}, "threads=-2: a positive whole number"),
        ({"threads": 100_000_000}, "threads=100000000: at most 1024 threads"),
        ({"threads": True}, "options: threads: expected int, got bool"),
        ({"threads": "4"}, "options: threads: expected int, got str"),
        ({"threads": 1.5}, "options: threads: expected int, got float"),
        ({"bootstrap_iters": -1}, "bootstrap_iters=-1: an integer >= 0"),
        ({"precisions": [{"name": "nf4", "num_cpus": math.nan}]}, "nf4 num_cpus: expected a"),
        ({"precisions": [{"name": "nf4", "num_gpus": math.inf}]}, "nf4 num_gpus: expected a"),
    ],
)
def test_a_plan_string_that_cannot_name_a_folder_is_refused_at_plan_time(
    micro_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture, change: dict,
    expected: str,
) -> None:  # fmt: skip
    """A label (or precision name) becomes a folder of the results: one that no file system
    takes is refused before any cell runs, with no results, locks or plan record left."""
    import yaml

    label = change.pop("label", "target")
    data = plan_with(micro_world, label)
    if "precisions" in change:
        data["precisions"] = change.pop("precisions")
    data["options"] |= change
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump(data))
    refused(capsys, ["sweep", str(plan), "--results", str(tmp_path / "results")], expected)
    assert [p.name for p in tmp_path.iterdir()] == ["plan.yaml"]


def test_the_longest_label_and_threads_pass_the_plan_check(micro_world: Path, tmp_path: Path):
    plan = plan_from_dict(plan_with(micro_world, "x" * 255, threads=4), tmp_path)
    assert plan.options.threads == 4 and len(plan.cells()) == 4
    assert plan_from_dict(plan_with(micro_world), tmp_path).options.threads is None



@pytest.mark.parametrize(
    ("entry", "key"),
    [
        ("{label: m, role: method, pretrained: T}\nprecisions: [fp32]", "precisions"),  # top
        ("{label: m, role: method, role: target, pretrained: T}", "role"),  # a model
        ("{label: m, role: method, pretrained: T, precisions: "
         "[{name: nf4, emulated: true, emulated: false}]}", "emulated"),  # a precision entry
    ],
)  # fmt: skip
def test_a_key_given_twice_in_a_plan_is_refused_not_overridden(
    micro_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture, entry: str, key: str
) -> None:
    """PyYAML keeps the last of repeated keys silently; a plan says what it runs only once."""
    import yaml

    from muse_quant.sweep.strict_yaml import load_strict

    data = plan_with(micro_world)
    models = data.pop("models")
    text = yaml.safe_dump(data) + "models:\n" + "".join(
        f"  - {json.dumps(m)}\n" for m in models
    )  # fmt: skip
    plan = tmp_path / "plan.yaml"
    plan.write_text(text + "  - " + entry.replace("T}", f"{micro_world / 'models/target'}}}"))
    refused(capsys, ["sweep", str(plan), "--results", str(tmp_path / "results")],
            f"key '{key}' is given twice in one mapping")  # fmt: skip
    assert [p.name for p in tmp_path.iterdir()] == ["plan.yaml"]
    # a YAML merge key's values may still be overridden: that is no repeat
    assert load_strict("a: &o {b: 1}\nc: {<<: *o, b: 2}\n") == {"a": {"b": 1}, "c": {"b": 2}}


@pytest.mark.parametrize("command", ["leaderboard", "sweep", "toyworld build", "eval"])
def test_threads_beyond_any_machine_are_refused_before_torch_starts_them(
    tmp_path: Path, capsys: pytest.CaptureFixture, command: str
) -> None:
    """torch crashed (SIGSEGV) when OpenMP could not start 10**8 threads."""
    argv = [*command.split(), "--threads", "100000000"]
    argv += {"leaderboard": [str(tmp_path), "--out", str(tmp_path / "b")],
             "sweep": [str(tmp_path / "plan.yaml")], "toyworld build": [], "eval": []}[command]
    refused(capsys, argv, "'100000000': at most 1024 threads")  # fmt: skip
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["audit", "demo"])
def test_an_empty_item_in_a_precision_list_is_refused(
    command: str, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    argv = [command, "--precisions", "fp32,,nf4", "--out", str(tmp_path / "out")]
    if command == "audit":
        argv += ["--model", "m", "--target", "t", "--retrain", "r", "--data", "d"]
    refused(capsys, argv, "argument --precisions: 'fp32,,nf4' has an empty item")
    assert list(tmp_path.iterdir()) == []


def test_the_demo_and_the_zoo_write_outside_what_they_read(
    micro_world: Path, capsys: pytest.CaptureFixture
) -> None:
    """A demo --out inside the cache, or a zoo --out inside its world, would put files among a
    world's checked ones (which then rebuilds itself): refused, nothing written."""
    from harness_ext.cache import cache_root

    before = sorted(micro_world.rglob("*"))
    inside = cache_root() / "demo-out-refused"
    demo = ["demo", "--scale", "micro", "--out", str(inside)]
    refused(capsys, demo, "is inside the muse-quant cache")
    assert not inside.exists()
    zoo = micro_world / "zoo"
    refused(capsys, ["toyworld", "zoo", "--world", str(micro_world), "--out", str(zoo)],
            "is inside the world")  # fmt: skip
    assert sorted(micro_world.rglob("*")) == before
