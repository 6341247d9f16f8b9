"""KnowMem prompt and answer cutting, exactly as MUSE's ``metrics/knowmem.py`` (docs/tasks.md)."""

from __future__ import annotations

#: Generation is cut before the first of these (MUSE's ``get_prefix_before_words_occur``).
KNOWMEM_CUTS: tuple[str, ...] = ("\n\n", "\nQuestion", "Question:")


def cut_answer(text: str) -> str:
    """The part of a generated answer before the earliest occurrence of any ``KNOWMEM_CUTS`` string.

    MUSE splits on each string in turn; for these three strings that is the same as cutting at the
    earliest position (none can start inside another's earlier match). No stripping: ROUGE's
    tokenizer ignores whitespace anyway, and MUSE does not strip.
    """
    positions = [i for i in (text.find(cut) for cut in KNOWMEM_CUTS) if i >= 0]
    return text[: min(positions)] if positions else text


def knowmem_prompt(icl: list[dict], question: str) -> str:
    """Few-shot prompt: every in-context ``{"question", "answer"}`` pair, then the open question.

    Each pair is ``"Question: {q}\\nAnswer: {a}\\n\\n"``; the prompt ends with ``"Answer: "`` (one
    trailing space), as in MUSE, so the model's answer starts right after it.
    """
    shots = "".join(f"Question: {ex['question']}\nAnswer: {ex['answer']}\n\n" for ex in icl)
    return f"{shots}Question: {question}\nAnswer: "
