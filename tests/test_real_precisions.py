"""Every precision on a real pretrained model: SmolLM2-135M (tests/test_real_model.py has the
model and why), each loaded and evaluated with --limit 2 through lm-eval, as a user runs it.

A file of its own so that the test workers run it beside test_real_model.py, not after it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from muse_run import run_tasks

from bench.results import flat_metrics

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None, reason="pip install 'muse-quant[gguf]'"
)

#: Every precision but GPTQ and AWQ, whose calibrated quantization of SmolLM2 takes minutes on this
#: CPU (measured in docs/precisions.md; both are tested on their real libraries with the toy
#: models). 4-bit groups of 64: 128 does not divide SmolLM2's width of 576.
EVERY_PRECISION = (
    "fp32", "bf16", "fp16", "int8", "nf4", "fp4", "rtn-w4g64", "fp8-e4m3", "hqq-w4g64",
    "gguf-f32", "gguf-q8_0", "gguf-q5_k_m", "gguf-q4_0", "gguf-q3_k_m", "gguf-shipped",
)  # fmt: skip


@pytest.mark.parametrize("precision", EVERY_PRECISION)
def test_every_precision_evaluates_it(
    smollm2: str, two_of_each: Path, precision: str, monkeypatch, tmp_path: Path
) -> None:
    """KnowMem (generation) and PrivLeak (token statistics) with --limit 2: each precision
    loads the real model, answers with text, scores every text, and records itself."""
    monkeypatch.chdir(tmp_path)  # lm-eval asks git for a commit hash of the working directory
    results = run_tasks(
        smollm2, two_of_each, ["muse_news_knowmem_f", "muse_news_privleak"], batch_size=8,
        limit=2, log_samples=True, model_args={"precision": precision},
    )  # fmt: skip
    answers = [s["resps"][0][0] for s in results["samples"]["muse_news_knowmem_f"]]
    assert len(answers) == 2 and all(a.strip() for a in answers), answers
    metrics = flat_metrics(results)
    assert 0 <= metrics["knowmem_f"] <= 100
    aucs = [v for k, v in metrics.items() if k.startswith("auc_")]
    assert aucs and all(0 <= v <= 1 for v in aucs), metrics
    assert results["config"]["muse_provenance"]["precision"]["name"] == precision
