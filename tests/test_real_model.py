"""A real pretrained model: SmolLM2-135M as shipped (its Q4_1 GGUF file, tests/test_bases.py).

It has a byte-level BPE vocabulary of 49,152 tokens with special tokens, a tied output head, and
real weight outliers, none of which the toy models have. The shipped file on llama.cpp is compared
with its dequantized twin in torch, and quantization error is ordered by perplexity on fictional
text the model never saw (the micro world's held-out biographies). docs/precisions.md has the
measured values.
"""

from __future__ import annotations

import importlib.util
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from lm_eval.api.instance import Instance
from muse_run import run_tasks

from model_wrappers.muse_model import build
from model_wrappers.request import read_request

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None, reason="pip install 'muse-quant[gguf]'"
)

#: Mean and largest |log p(shipped) - log p(dequantized)| per token, at most (measured: 0.077
#: and 1.44 over the 749 tokens of the 8 held-out texts: llama.cpp quantizes the activations of
#: its Q4_1 dot products to 8 bits, torch does not; docs/precisions.md).
MEAN_GAP, MAX_GAP = 0.12, 2.0


@pytest.fixture(scope="module")
def held_out(micro_world: Path) -> list[str]:
    """Fictional biographies the model never saw, each cut to its first 60 words."""
    texts = json.loads((micro_world / "data" / "raw" / "holdout.json").read_text())
    return [" ".join((t if isinstance(t, str) else t["text"]).split()[:60]) for t in texts]


def model_at(pretrained: str, precision: str):
    return build(read_request({"pretrained": pretrained, "precision": precision}))


def greedy(model, prompt: str) -> str:
    request = Instance("generate_until", {}, (prompt, {"until": ["\n"], "max_gen_toks": 4}), 0)
    return model.generate_until([request], disable_tqdm=True)[0]


def test_shipped_file_and_its_dequantized_twin_agree(smollm2: str, held_out: list[str]) -> None:
    shipped, twin = model_at(smollm2, "gguf-shipped"), model_at(smollm2, "fp32")
    for model in (shipped, twin):
        assert greedy(model, "The capital of France is").startswith(" Paris")
    gaps = []
    for a, b in zip(shipped.token_stats(held_out), twin.token_stats(held_out), strict=True):
        assert len(a.logprobs) == len(b.logprobs)
        gaps += np.abs(np.asarray(a.logprobs) - np.asarray(b.logprobs)).tolist()
    print(f"token log-prob gap: mean {sum(gaps) / len(gaps):.3f}, max {max(gaps):.3f}")
    assert sum(gaps) / len(gaps) <= MEAN_GAP and max(gaps) <= MAX_GAP
    source = twin.provenance["gguf_source"]
    assert source["sha256"].startswith("b179c952") and source["shipped"] is False
    assert shipped.provenance["gguf_source"]["shipped"] is True


@dataclass(frozen=True)
class Measured:
    """One precision of SmolLM2, built once: perplexity over the held-out texts, the rolling
    log-likelihood of each, and the provenance."""

    perplexity: float
    rolling: list[float]
    provenance: dict


@pytest.fixture(scope="module")
def measured(smollm2: str, held_out: list[str]):
    """:class:`Measured` at a precision, computed once each (one model load per precision)."""
    found: dict[str, Measured] = {}
    rolling = [Instance("loglikelihood_rolling", {}, (t,), i) for i, t in enumerate(held_out)]

    def at(precision: str) -> Measured:
        if precision not in found:
            model = model_at(smollm2, precision)
            stats = model.token_stats(held_out)
            logprobs = np.concatenate([np.asarray(s.logprobs) for s in stats])
            found[precision] = Measured(
                math.exp(-float(logprobs.mean())),
                model.loglikelihood_rolling(rolling, disable_tqdm=True),
                model.provenance,
            )
            print(f"perplexity at {precision}: {found[precision].perplexity:.2f}")
        return found[precision]

    return at


def test_eight_bit_precisions_stay_near_fp32(measured) -> None:
    """int8, q8_0 and q6_k (which is mostly Q8_0 here, below) within 5% of fp32."""
    reference = measured("fp32").perplexity
    for precision in ("int8", "gguf-q8_0", "gguf-q6_k"):
        assert abs(measured(precision).perplexity / reference - 1) < 0.05, precision


def test_k_quants_fall_back_on_rows_of_576(measured) -> None:
    """llama.cpp's k-quants need rows of a multiple of 256 weights; SmolLM2's are 576 wide
    except the FFN's down projection (1,536), so its k-quant files are mostly legacy types."""
    types = {p: measured(p).provenance["precision"]["library_config"]["tensor_types"]
             for p in ("gguf-q6_k", "gguf-q4_k_m", "gguf-q2_k")}  # fmt: skip
    assert types["gguf-q6_k"] == {"F32": 61, "Q8_0": 181, "Q6_K": 30}
    assert max(types["gguf-q4_k_m"], key=types["gguf-q4_k_m"].get) == "Q5_0"
    assert types["gguf-q2_k"] == {"F32": 61, "Q8_0": 1, "Q4_0": 180, "Q3_K": 30}


def test_quantization_error_grows_as_bits_fall(measured) -> None:
    """By the bits the files really hold: q6_k (8-bit mostly), then q4_k_m (5-bit mostly), then
    q2_k (4-bit mostly, its FFN down projections 3-bit), and bitsandbytes' 4-bit formats, whose
    one absmax per 64 weights loses more; NF4 less than FP4."""
    order = ("gguf-q6_k", "gguf-q4_k_m", "gguf-q2_k", "nf4", "fp4")
    values = [measured(p).perplexity for p in order]
    assert values == sorted(values), dict(zip(order, values, strict=True))


def test_the_tasks_equal_the_batch_one_reference_on_it(
    smollm2: str, two_of_each: Path, monkeypatch, tmp_path: Path
) -> None:
    """Our batched tasks and the independent batch-1 evaluator (bench/reference_muse.py) on the
    dequantized SmolLM2, with its byte-level vocabulary and special tokens: every metric equal,
    and the generations are text, not empty strings."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bench.reference_muse import evaluate as reference_evaluate
    from bench.results import flat_metrics
    from harness_ext.metrics.auc import PUBLISHED_RETRAIN_AUC

    folder = read_request({"pretrained": smollm2}).opened.weights.folder
    monkeypatch.chdir(tmp_path)  # lm-eval asks git for a commit hash of the working directory
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    expected = reference_evaluate(
        model, AutoTokenizer.from_pretrained(folder), two_of_each, PUBLISHED_RETRAIN_AUC["news"]
    )
    results = run_tasks(folder, two_of_each, ["muse_news"], batch_size=8, log_samples=True)
    got = flat_metrics(results)
    assert set(got) == set(expected)
    for metric, value in expected.items():
        assert got[metric] == pytest.approx(value, abs=0.01 if "mem" in metric else 1e-4), metric
    for task in ("muse_news_verbmem_f", "muse_news_knowmem_f", "muse_news_knowmem_r"):
        answers = [sample["resps"][0][0] for sample in results["samples"][task]]
        assert answers and all(answer.strip() for answer in answers), task


def test_both_runtimes_score_a_rolling_text_alike(measured) -> None:
    """lm-eval's rolling log-likelihood (a perplexity task's request): SmolLM2's tokenizer adds
    no BOS, so each runtime must score every token after the same prefix token; llama.cpp's f32
    file and torch's float32 model then agree to float rounding (each text's sum over about 100
    tokens)."""
    pairs = zip(measured("fp32").rolling, measured("gguf-f32").rolling, strict=True)
    for a, b in pairs:
        assert a == pytest.approx(b, abs=0.05), (a, b)
