"""Data parallelism inside one evaluation: ``torchrun`` (or ``accelerate launch``) over the muse
model splits the documents across processes, and rank 0 writes what one process would have.

Two processes on CPU (accelerate's gloo process group) against one, on the micro world: the
generations and the set of documents are identical, PrivLeak's AUCs (computed on the gathered
per-text scores) equal, and the truncation report counts every process's documents once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

#: Short enough that some prompts and PrivLeak texts are cut (on both ranks), so the truncation
#: report has something to gather.
MODEL_ARGS = "context_overflow=truncate,max_length=150"


def _eval(world: Path, out: Path, processes: int) -> subprocess.CompletedProcess[str]:
    args = [
        "eval", "--model", "muse",
        "--model_args", f"pretrained={world / 'models' / 'retrain'},{MODEL_ARGS}",
        "--tasks", "muse_news", "--metadata", f"muse_data={world / 'data'}", "--device", "cpu",
        "--batch_size", "16", "--output_path", str(out), "--log_samples",
    ]
    if processes == 1:
        command = [sys.executable, "-m", "muse_quant", *args]
    else:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        command = [*launcher, f"--nproc_per_node={processes}", "-m", "muse_quant", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def _written(out: Path) -> tuple[dict, dict[str, dict[int, dict]]]:
    (results,) = out.rglob("results_*.json")
    samples = {}
    for path in out.rglob("samples_*.jsonl"):
        task = path.name.removeprefix("samples_").rsplit("_", 1)[0]
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        samples[task] = {row["doc_id"]: row for row in rows}
    return json.loads(results.read_text()), samples


@pytest.fixture(scope="module")
def one_and_two(micro_world: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    written = []
    for processes in (1, 2):
        out = tmp_path_factory.mktemp(f"processes{processes}")
        run = _eval(micro_world, out, processes)
        assert run.returncode == 0, run.stderr[-3000:]
        written.append((*_written(out), run.stderr))
    return tuple(written)


def test_two_processes_score_every_document_once_as_one_does(one_and_two: tuple) -> None:
    (_, single, _), (_, double, console) = one_and_two
    # rank 1 built its own share of the requests (lm-eval names the rank), and only rank 0 wrote
    # a results file (``_written`` finds exactly one)
    assert "Building contexts for muse_news_privleak on rank 1" in console
    assert set(single) == set(double) == {
        "muse_news_verbmem_f", "muse_news_knowmem_f", "muse_news_knowmem_r", "muse_news_privleak"
    }
    for task, docs in single.items():
        assert sorted(docs) == sorted(double[task]), task  # every document, none twice
        for doc_id, row in docs.items():
            other = double[task][doc_id]
            assert row["doc_hash"] == other["doc_hash"]
            if task == "muse_news_privleak":
                for metric in row["metrics"]:  # per-text scores: batching moves float32 ulps
                    assert row[metric]["set"] == other[metric]["set"]
                    assert other[metric]["score"] == pytest.approx(row[metric]["score"], abs=1e-6)
            else:
                assert row["filtered_resps"] == other["filtered_resps"], (task, doc_id)
                assert all(row[m] == other[m] for m in row["metrics"]), (task, doc_id)


def test_two_processes_give_the_corpus_level_auc_of_one(one_and_two: tuple) -> None:
    """PrivLeak's AUCs are computed on rank 0 over the gathered texts of both ranks: the same
    numbers as one process, and not the AUC of either half."""
    (single, _, _), (double, _, _) = one_and_two
    for task, metrics in single["results"].items():
        for name, value in metrics.items():
            if "stderr" in name or not isinstance(value, float):
                continue
            assert double["results"][task][name] == pytest.approx(value, rel=1e-9), (task, name)
    privleak = single["results"]["muse_news_privleak"]
    assert 0.05 < privleak["auc_mink++_20,none"] < 0.95  # a real ranking, not a degenerate 0 or 1
    assert single["n-samples"] == double["n-samples"]


def test_two_processes_report_every_truncated_document_once(one_and_two: tuple) -> None:
    (single, _, _), (double, _, _) = one_and_two
    report = single["config"]["muse_truncation"]
    assert report["policy"] == "truncate"
    assert set(report["tasks"]) == {"muse_news_privleak", "muse_news_verbmem_f"}
    assert double["config"]["muse_truncation"] == report
