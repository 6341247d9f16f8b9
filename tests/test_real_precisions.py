"""Every quantization backend on a real pretrained model: SmolLM2-135M (tests/test_real_model.py
has the model and why), loaded and evaluated with --limit 2 through lm-eval, as a user runs it.

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

#: One precision of every backend and runtime, each through lm-eval on the real model: half
#: precision (fp16, whose range real activations may exceed; bf16 is the same cast), bitsandbytes,
#: torchao, FP8, HQQ, a quantized GGUF file on llama.cpp and the shipped one. The other precisions
#: of the same backends are loaded and run on SmolLM2 by tests/test_real_model.py (fp32 through
#: the tasks; int8, fp4 and five GGUF types by perplexity), and every one of them on the toy
#: models; each costs 30-60 s here. GPTQ and AWQ are left out: their calibrated quantization of
#: SmolLM2 takes minutes on this CPU (docs/precisions.md). 4-bit groups of 64: 128 does not
#: divide SmolLM2's width of 576.
EVERY_BACKEND = (
    "fp16", "nf4", "rtn-w4g64", "fp8-e4m3", "hqq-w4g64", "gguf-q4_0", "gguf-shipped",
)  # fmt: skip


@pytest.mark.parametrize("precision", EVERY_BACKEND)
def test_every_backend_evaluates_it(
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
