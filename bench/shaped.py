"""The benchmarks' MUSE-shaped work: the data folder and a random Llama with a tokenizer for it.

Shared by bench_tasks.py and gpu_check.py; both reuse what an earlier run wrote under ``work``.
"""

from __future__ import annotations

import json
from pathlib import Path

from muse_quant.toyworld.config import ModelShape
from muse_quant.toyworld.muse_shaped import MuseShape, write_muse_shaped

#: 900 merges give Llama-2's tokens per character on this text (PrivLeak ~1.8k tokens per text,
#: VerbMem ~1k per prompt).
BPE_MERGES = 900
#: Llama-2-7B's shape.
LLAMA_7B = ModelShape(hidden=4096, layers=32, heads=32, intermediate=11008, vocab=32000,
                      context=4096)  # fmt: skip


def read(data: Path, config: str, split: str) -> list:
    return json.loads((data / config / f"{split}.json").read_text(encoding="utf-8"))


def shaped_work(
    work: Path, records: int, shape: ModelShape, dtype: str = "float32", device: str = "cpu"
) -> tuple[Path, Path]:
    """``(data, model)``: MUSE-News-shaped data of ``records`` per file and a random Llama of
    ``shape`` (its vocabulary is the shape's, e.g. Llama's 32k, which sets the size of every
    vocabulary-wide statistic; ids past the tokenizer's decode to nothing), saved in ``dtype``."""
    folder = work / f"r{records}-h{shape.hidden}-l{shape.layers}-v{shape.vocab}-{dtype}"
    data, model = folder / "data", folder / "model"
    if (model / "config.json").is_file():
        return data, model
    # Only to build (a reused model's load is then timed with transformers' own imports).
    import torch

    from muse_quant.toyworld.tokenizer import train_bpe_tokenizer
    from muse_quant.toyworld.training import new_llama

    write_muse_shaped(data, MuseShape(records=records))
    texts = [t for s in ("forget", "retain", "holdout") for t in read(data, "privleak", s)]
    tokenizer = train_bpe_tokenizer(texts, BPE_MERGES)
    with torch.device(device):
        llama = new_llama(shape, tokenizer, seed=0)
        llama.resize_token_embeddings(shape.vocab, mean_resizing=False)
    llama.to(getattr(torch, dtype)).save_pretrained(model)
    tokenizer.save_pretrained(model)
    return data, model
