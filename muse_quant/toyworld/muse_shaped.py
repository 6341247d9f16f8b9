"""Benchmark data of MUSE's shape: fictional text with MUSE-News's counts and lengths.

The project does not ship MUSE's files, but speed and memory depend on the shape of the work:
100 VerbMem prompts of ~4.5k characters, each followed by 128 generated tokens; 100 + 100 KnowMem
questions behind a 10-pair in-context prefix of ~1.1k characters; 100 + 100 PrivLeak texts of
~8k characters (each scored twice). This writes a local MUSE-layout folder of that shape from the
toy world's biography generator, so benchmarks and tests measure the real work.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from harness_ext.muse_layout import write_split
from muse_quant.toyworld.corpus import Person, make_person, questions, write_biography


@dataclass(frozen=True)
class MuseShape:
    """Counts and character lengths of one MUSE corpus's evaluation files (MUSE-News's)."""

    records: int = 100
    verbmem_prompt_chars: int = 4500
    verbmem_gt_chars: int = 600
    #: MUSE's prefix is 10 longer pairs, ~1.1k characters; 16 toy pairs make the same length.
    icl_pairs: int = 16
    privleak_chars: int = 8000
    #: ``raw/retain1`` texts (GPTQ's calibration source), of ``privleak_chars`` each.
    calibration_texts: int = 16


def _text(rng: random.Random, people: list[Person], chars: int) -> str:
    """Biographies of ``people`` (cycled) joined until the text reaches ``chars`` characters."""
    parts: list[str] = []
    length = 0
    while length < chars:
        parts.append(write_biography(rng, rng.choice(people), fillers=6))
        length += len(parts[-1]) + 1
    return " ".join(parts)[:chars].rsplit(" ", 1)[0]


def write_muse_shaped(folder: str | Path, shape: MuseShape = MuseShape(), seed: int = 0) -> Path:
    """Write a MUSE-layout folder of ``shape`` (fictional text, deterministic in ``seed``)."""
    rng = random.Random(seed)
    n = shape.records
    people = n + shape.icl_pairs  # four questions each: enough for the prefix and n questions
    forget, retain, holdout = ([make_person(rng) for _ in range(people)] for _ in range(3))
    verbmem = []
    for _ in range(n):
        text = _text(rng, forget, shape.verbmem_prompt_chars + shape.verbmem_gt_chars)
        cut = text.rfind(" ", 0, shape.verbmem_prompt_chars) + 1
        verbmem.append({"prompt": text[:cut], "gt": text[cut:]})
    write_split(folder, "verbmem", "forget", verbmem)
    for name, people in (("forget", forget), ("retain", retain)):
        pairs = [qa for person in people for qa in questions(person)]
        rng.shuffle(pairs)
        write_split(folder, "knowmem", f"{name}_qa_icl", pairs[: shape.icl_pairs])
        write_split(folder, "knowmem", f"{name}_qa", pairs[shape.icl_pairs : shape.icl_pairs + n])
    for name, people in (("forget", forget), ("retain", retain), ("holdout", holdout)):
        write_split(
            folder, "privleak", name, [_text(rng, people, shape.privleak_chars) for _ in range(n)]
        )
    for name, people in (("forget", forget), ("holdout", holdout)):
        write_split(folder, "raw", name, [_text(rng, people, shape.privleak_chars)])
    calibration = [_text(rng, retain, shape.privleak_chars) for _ in range(shape.calibration_texts)]
    write_split(folder, "raw", "retain1", calibration)
    write_split(folder, "raw", "retain2", calibration[:1])
    return Path(folder)
