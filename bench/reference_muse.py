"""A plain MUSE reference evaluator, written from MUSE's definitions alone (docs/tasks.md).

Deliberately naive: batch-1 loops, one ``generate`` per prompt, one forward per text, reading the
data folder's JSON directly, computing every metric with ``rouge_score``, numpy and scikit-learn,
and importing nothing from muse-quant. The faithfulness test and the benchmark compare the lm-eval
tasks against it; neither may copy it.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import torch
from rouge_score.rouge_scorer import RougeScorer
from sklearn.metrics import roc_auc_score

MINK_PERCENTS = (5, 10, 20, 30, 40, 50, 60)
_SCORER = RougeScorer(["rougeL"], use_stemmer=False)


def _read(folder: Path, config: str, split: str) -> list:
    return json.loads((folder / config / f"{split}.json").read_text(encoding="utf-8"))


def _rouge_l_f1(reference: str, candidate: str) -> float:
    return _SCORER.score(reference, candidate)["rougeL"].fmeasure


@torch.no_grad()
def _greedy(model, tokenizer, prompt: str, max_new_tokens: int) -> str:
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=True).input_ids
    out = model.generate(
        ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
    )
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def verbmem(model, tokenizer, data: Path) -> list[float]:
    """Per prompt: ROUGE-L F1 x 100, greedy 128-token continuation vs gt's first 128 tokens."""
    scores = []
    for rec in _read(data, "verbmem", "forget"):
        gt_ids = tokenizer(rec["gt"], add_special_tokens=True).input_ids[:128]
        gt = tokenizer.decode(gt_ids, skip_special_tokens=True)
        scores.append(100 * _rouge_l_f1(gt, _greedy(model, tokenizer, rec["prompt"], 128)))
    return scores


def _cut(text: str) -> str:
    for stop in ("\n\n", "\nQuestion", "Question:"):
        text = text.split(stop)[0]
    return text


def knowmem(model, tokenizer, data: Path, which: str) -> list[float]:
    """Per question of ``<which>_qa``: ICL prompt, greedy 32 tokens, cut, ROUGE-L F1 x 100."""
    shots = "".join(
        f"Question: {ex['question']}\nAnswer: {ex['answer']}\n\n"
        for ex in _read(data, "knowmem", f"{which}_qa_icl")
    )
    scores = []
    for rec in _read(data, "knowmem", f"{which}_qa"):
        out = _greedy(model, tokenizer, f"{shots}Question: {rec['question']}\nAnswer: ", 32)
        scores.append(100 * _rouge_l_f1(rec["answer"], _cut(out)))
    return scores


@torch.no_grad()
def _token_logprobs(model, tokenizer, text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """log p of each token after BOS, and the vocabulary mean/std of log p (Min-K%++), float32."""
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=True).input_ids
    logp = torch.log_softmax(model(ids).logits[0, :-1].float(), dim=-1)
    token = logp.gather(1, ids[0, 1:, None])[:, 0]
    p = logp.exp()
    mu = (p * logp).sum(-1)
    var = (p * logp * logp).sum(-1) - mu * mu
    return token.numpy(), mu.numpy(), var.clamp(min=1e-6).sqrt().numpy()


def _mink(values: np.ndarray, percent: int) -> float:
    n = int(len(values) * percent / 100)
    assert n > 0, "text too short for this Min-K% (int(len * k) == 0)"
    return -float(np.mean(np.sort(values)[:n]))


def mia_scores(model, tokenizer, text: str) -> dict[str, float]:
    """Every PrivLeak score of one text (higher = more like a non-member).

    Min-K%++ (not one of MUSE's) follows Zhang et al. 2024: Min-K% of (log p - mu) / sigma, the
    variance floored at 1e-6 as open-unlearning does.
    """
    logp, mu, sigma = _token_logprobs(model, tokenizer, text)
    loss = -float(np.mean(logp))
    lower_loss = -float(np.mean(_token_logprobs(model, tokenizer, text.lower())[0]))
    scores = {
        "loss": loss,
        "zlib": loss / len(zlib.compress(text.encode("utf-8"))),
        "lowercase": loss / lower_loss,
    }
    for k in MINK_PERCENTS:
        scores[f"mink_{k}"] = _mink(logp, k)
        scores[f"mink++_{k}"] = _mink((logp - mu) / sigma, k)
    return scores


def privleak_aucs(model, tokenizer, data: Path) -> dict[str, float]:
    """AUC of every score, forget = 0 / holdout = 1, ROC on -score."""
    per_set = {
        name: [mia_scores(model, tokenizer, t) for t in _read(data, "privleak", name)]
        for name in ("forget", "holdout")
    }
    labels = [0] * len(per_set["forget"]) + [1] * len(per_set["holdout"])
    rows = per_set["forget"] + per_set["holdout"]
    return {name: roc_auc_score(labels, [-r[name] for r in rows]) for name in rows[0]}


def evaluate(model, tokenizer, data: Path, auc_retrain: float) -> dict[str, float]:
    """The whole MUSE suite for one model: the means x 100, every AUC and PrivLeak (Min-40%)."""
    model.eval()
    out = {
        "verbmem_f": float(np.mean(verbmem(model, tokenizer, data))),
        "knowmem_f": float(np.mean(knowmem(model, tokenizer, data, "forget"))),
        "knowmem_r": float(np.mean(knowmem(model, tokenizer, data, "retain"))),
    }
    aucs = privleak_aucs(model, tokenizer, data)
    out.update({f"auc_{name}": auc for name, auc in aucs.items()})
    out["privleak"] = (aucs["mink_40"] - auc_retrain) / auc_retrain * 100
    return out
