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
