"""A quick memorization check of a model, straight from the MUSE definitions (docs/tasks.md).

Not the lm-eval tasks (those are the real measurement): a small batched greedy loop used by the
toy world builder to report how well its models memorized, by the unlearning recipes to stop
early, and by the tests to assert the thresholds.
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


def truncate_tokens(tokenizer: PreTrainedTokenizerBase, text: str, max_tokens: int) -> str:
    """The text cut to its first ``max_tokens`` tokens (special tokens counted), as MUSE does."""
    ids = tokenizer(text)["input_ids"][:max_tokens]
    return tokenizer.decode(ids, skip_special_tokens=True)


def verbatim_rouge(
    model, tokenizer, pairs: list[dict[str, str]], max_new_tokens: int = 128
) -> float:
    """Mean ROUGE-L F1 of each prompt's greedy continuation against its true continuation (cut to
    ``max_new_tokens`` tokens)."""
    outs = greedy_continuations(model, tokenizer, [p["prompt"] for p in pairs], max_new_tokens)
    scores = [
        rouge_l_f1(truncate_tokens(tokenizer, p["gt"], max_new_tokens), o)
        for p, o in zip(pairs, outs, strict=True)
    ]
    return sum(scores) / len(scores)


def qa_rouge(model, tokenizer, qa: list[dict[str, str]], icl: list[dict[str, str]]) -> float:
    """Mean ROUGE-L F1 of the cut greedy answer against the true answer (KnowMem's recipe)."""
    prompts = [knowmem_prompt(icl, q["question"]) for q in qa]
    outs = greedy_continuations(model, tokenizer, prompts, max_new_tokens=32)
    scores = [rouge_l_f1(q["answer"], cut_answer(o)) for q, o in zip(qa, outs, strict=True)]
    return sum(scores) / len(scores)
