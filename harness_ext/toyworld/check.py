"""A quick memorization check of a toy model, straight from the spec's definitions.

Not the lm-eval tasks (those are the real measurement): a small batched greedy loop used by the
builder to report how well the target memorized, and by the tests to assert the thresholds.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from harness_ext.metrics.knowmem import cut_answer, knowmem_prompt
from harness_ext.metrics.rouge import rouge_l_f1


@torch.no_grad()
def greedy_continuations(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    max_new_tokens: int,
    batch_size: int = 16,
) -> list[str]:
    """Greedy continuations, left-padded batches, decoded without special tokens."""
    tokenizer.padding_side = "left"
    out: list[str] = []
    for start in range(0, len(prompts), batch_size):
        enc = tokenizer(prompts[start : start + batch_size], return_tensors="pt", padding=True)
        gen = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        new = gen[:, enc["input_ids"].shape[1] :]
        out += tokenizer.batch_decode(new, skip_special_tokens=True)
    return out


def verbatim_rouge(
    model, tokenizer, pairs: list[dict[str, str]], max_new_tokens: int = 128
) -> float:
    """Mean ROUGE-L F1 of the greedy continuation of each prompt against its true continuation."""
    outs = greedy_continuations(model, tokenizer, [p["prompt"] for p in pairs], max_new_tokens)
    return sum(rouge_l_f1(p["gt"], o) for p, o in zip(pairs, outs, strict=True)) / len(pairs)


def qa_rouge(model, tokenizer, qa: list[dict[str, str]], icl: list[dict[str, str]]) -> float:
    """Mean ROUGE-L F1 of the cut greedy answer against the true answer (KnowMem's recipe)."""
    prompts = [knowmem_prompt(icl, q["question"]) for q in qa]
    outs = greedy_continuations(model, tokenizer, prompts, max_new_tokens=32)
    scores = [rouge_l_f1(q["answer"], cut_answer(o)) for q, o in zip(qa, outs, strict=True)]
    return sum(scores) / len(scores)
