"""``muse-quant eval`` / ``tasks-path``, and plain ``lm_eval --include_path`` on our tasks."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from muse_quant.cli import main
from muse_quant.lm_eval_tasks import tasks_path

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("muse_news_verbmem_f", "muse_news_knowmem_f", "muse_news_knowmem_r", "muse_news_privleak")


def eval_args(world: Path, out: Path, *extra: str, model: str = "muse") -> list[str]:
    return [
        "eval", "--model", model, "--model_args", f"pretrained={world / 'models' / 'target'}",
        "--metadata", f"muse_data={world / 'data'}", "--device", "cpu", "--batch_size", "64",
        "--output_path", str(out), *extra,
    ]


def written_files(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*") if p.is_file()) if out.exists() else []


def test_eval_writes_results_and_recomputable_samples(
    micro_world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Full group, results JSON + samples; no network, no lm-eval default task index."""
    import lm_eval.tasks._index as index

    monkeypatch.chdir(tmp_path)
    indexed: list[str] = []
    build = index.TaskIndex.build
    monkeypatch.setattr(
        index.TaskIndex, "build",
        staticmethod(lambda paths, **kw: (indexed.extend(map(str, paths)), build(paths, **kw))[1]),
    )
    attempts: list[object] = []

    def no_network(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)

    out = tmp_path / "out"
    assert main(eval_args(micro_world, out, "--tasks", "muse_news", "--log_samples")) == 0

    assert attempts == []
    lm_eval_tasks = str(Path(index.__file__).parent)
    assert indexed and lm_eval_tasks not in indexed and str(tasks_path()) in indexed

    (results_file,) = out.rglob("results_*.json")
    results = json.loads(results_file.read_text())["results"]
    assert set(TASKS) <= set(results)
    samples = {t: [json.loads(line) for line in next(out.rglob(f"samples_{t}_*.jsonl")).open()]
               for t in TASKS}

    verbmem = [s["verbmem_f"] for s in samples["muse_news_verbmem_f"]]
    assert len(verbmem) == len(json.loads((micro_world / "data/verbmem/forget.json").read_text()))
    assert results["muse_news_verbmem_f"]["verbmem_f,none"] == pytest.approx(np.mean(verbmem))
    assert results["muse_news_knowmem_r"]["knowmem_r,none"] == pytest.approx(
        np.mean([s["knowmem_r"] for s in samples["muse_news_knowmem_r"]])
    )
    # Every AUC can be recomputed from the per-text scores in the samples file.
    items = [s["auc_mink_40"] for s in samples["muse_news_privleak"]]
    labels = [0 if i["set"] == "forget" else 1 for i in items]
    recomputed = roc_auc_score(labels, [-i["score"] for i in items])
    assert results["muse_news_privleak"]["auc_mink_40,none"] == pytest.approx(recomputed, abs=1e-12)
    retrain_auc = samples["muse_news_privleak"][0]["privleak"]["auc_retrain"]
    assert results["muse_news_privleak"]["privleak,none"] == pytest.approx(
        (recomputed - retrain_auc) / retrain_auc * 100
    )


def one_line_exit_2(capsys: pytest.CaptureFixture, argv: list[str], *expected: str) -> None:
    """Exit status 2 and one error line (the last on stderr; lm-eval may have logged before)."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("muse-quant: error: ") and "Traceback" not in "".join(err)
    for text in expected:
        assert text in err[-1]


def test_stock_hf_on_privleak_is_refused_before_loading(
    micro_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "out"
    argv = eval_args(micro_world, out, "--tasks", "muse_news", model="hf")
    one_line_exit_2(capsys, argv, "muse_news_privleak", "--model muse")
    assert written_files(out) == []


def test_unknown_corpus(micro_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    one_line_exit_2(capsys, eval_args(micro_world, out, "--tasks", "muse_wiki_verbmem_f"),
                    "muse_wiki_verbmem_f", "news, books")
    assert written_files(out) == []


def test_missing_data_folder(
    micro_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = eval_args(micro_world, tmp_path / "out", "--tasks", "muse_news_privleak")
    argv[argv.index("--metadata") + 1] = f"muse_data={tmp_path / 'nowhere'}"
    one_line_exit_2(capsys, argv, "no such folder")


@pytest.mark.parametrize("checked_first", [True, False])
def test_broken_data_exits_2_without_results(
    checked_first: bool, micro_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Caught by the command's check before loading the model, and (should that check miss it)
    by the task itself during lm-eval's run: either way one line, exit 2, no results file."""
    monkeypatch.chdir(tmp_path)
    if not checked_first:
        monkeypatch.setattr("muse_quant.cli.eval.required_splits", lambda task: [])
    data = Path(shutil.copytree(micro_world / "data", tmp_path / "data"))
    (data / "knowmem" / "retain_qa_icl.json").unlink()
    argv = eval_args(micro_world, tmp_path / "out", "--tasks", "muse_news", "--log_samples")
    argv[argv.index("--metadata") + 1] = f"muse_data={data}"
    one_line_exit_2(capsys, argv, "knowmem/retain_qa_icl.json: missing")
    assert written_files(tmp_path / "out") == []


def test_tasks_path(capsys: pytest.CaptureFixture) -> None:
    assert main(["tasks-path"]) == 0
    folder = Path(capsys.readouterr().out.strip())
    assert (folder / "muse" / "muse_news.yaml").is_file()
    assert (folder / "muse" / "utils.py").is_file()


def test_plain_lm_eval_with_include_path(micro_world: Path, tmp_path: Path) -> None:
    """The documented plain-lm_eval route: stock --model hf on a generation task."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable, "-m", "lm_eval", "run", "--include_path", str(tasks_path()),
        "--model", "hf", "--model_args", f"pretrained={micro_world / 'models' / 'target'}",
        "--tasks", "muse_news_knowmem_f", "--metadata", f"muse_data={micro_world / 'data'}",
        "--device", "cpu", "--batch_size", "64", "--limit", "4",
        "--output_path", str(tmp_path / "out"),
    ]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (results_file,) = (tmp_path / "out").rglob("results_*.json")
    results = json.loads(results_file.read_text())["results"]["muse_news_knowmem_f"]
    assert 0.0 <= results["knowmem_f,none"] <= 100.0
    assert "Custom kwargs" not in done.stderr  # muse_data is the documented metadata


def test_only_the_custom_kwargs_note_about_our_tasks_is_dropped() -> None:
    """lm-eval's task logger still passes the same note about another task, and other
    warnings about ours."""
    import harness_ext.evaluation  # noqa: F401 - loaded with our tasks; it sets the filter

    logger = logging.getLogger("lm_eval.api.task")
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        for task in ("muse_news_verbmem_f", "arc_easy"):
            logger.warning("%s: Custom kwargs can be passed to `--metadata` in console", task)
        logger.warning("muse_news_verbmem_f: something else")
    finally:
        logger.removeHandler(handler)
    assert seen == [
        "arc_easy: Custom kwargs can be passed to `--metadata` in console",
        "muse_news_verbmem_f: something else",
    ]


@pytest.mark.skipif(shutil.which("git") is None, reason="git is what lm-eval asks")
def test_git_hash_outside_a_checkout_prints_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """lm-eval's git hash lookup prints git's complaint outside a checkout; under the patch
    it prints nothing and records the same (none there, the hash in a checkout)."""
    import lm_eval.evaluator as evaluator

    from muse_quant.lm_eval_patches import git_hash_quietly

    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    monkeypatch.chdir(tmp_path)
    capfd.readouterr()
    assert evaluator.get_git_commit_hash() is None
    assert "not a git repository" in capfd.readouterr().err  # what lm-eval's own call prints
    with git_hash_quietly():
        assert evaluator.get_git_commit_hash() is None
        monkeypatch.chdir(ROOT)
        in_checkout = evaluator.get_git_commit_hash()
    assert capfd.readouterr().err == ""
    if (ROOT / ".git").exists():
        assert isinstance(in_checkout, str) and in_checkout
