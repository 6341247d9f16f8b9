"""Training data of an unlearning run: forget and retain texts from a MUSE-layout folder.

Each training example pairs one forget chunk with one retain chunk (drawn with a seeded
generator), as MUSE's and open-unlearning's forget/retain datasets do, so every step sees both.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from harness_ext.errors import MuseQuantError
from harness_ext.files import sha256_file
from harness_ext.muse_layout import read_split, split_path
from model_wrappers.batching import pad_batch


def _texts(data: Path, split: str) -> list[str]:
    """The non-blank texts of ``raw/<split>`` (read_split refuses a missing or empty file)."""
    texts = [r["text"] for r in read_split(data, "raw", split) if r["text"].strip()]
    if not texts:
        raise MuseQuantError(
            f"{split_path(data, 'raw', split)}: only blank texts; unlearning needs {split} text"
        )
    return texts


def data_hash(data: Path, splits: tuple[str, ...]) -> dict[str, str]:
    """sha256 of each raw split file the run reads (recorded in ``unlearn.json``)."""
    return {s: sha256_file(split_path(data, "raw", s)) for s in splits}


def chunk_ids(tokenizer: Any, texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids of each text (BOS as the tokenizer adds it), cut into ``max_length`` chunks."""
    chunks = []
    for text in texts:
        ids = tokenizer(text)["input_ids"]
        chunks += [ids[i : i + max_length] for i in range(0, len(ids), max_length)]
    return [c for c in chunks if len(c) > 1]


@dataclass
class ForgetRetainData(Dataset):
    """Forget chunks, each paired with a seeded-random retain chunk."""

    forget: list[list[int]]
    retain: list[list[int]]
    seed: int

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        self._partner = [rng.randrange(len(self.retain)) for _ in self.forget]

    def __len__(self) -> int:
        return len(self.forget)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return {"forget": self.forget[i], "retain": self.retain[self._partner[i]]}


def load_forget_retain(
    data: Path, tokenizer: Any, retain_splits: tuple[str, ...], max_length: int, seed: int
) -> ForgetRetainData:
    forget = chunk_ids(tokenizer, _texts(data, "forget"), max_length)
    retain = [c for s in retain_splits for c in chunk_ids(tokenizer, _texts(data, s), max_length)]
    return ForgetRetainData(forget, retain, seed)


@dataclass
class ForgetRetainCollator:
    """Batches of pairs into ``{"forget": {...}, "retain": {...}}`` padded tensors."""

    pad_id: int

    def __call__(self, items: list[dict[str, list[int]]]) -> dict[str, dict[str, torch.Tensor]]:
        return {k: pad_batch([it[k] for it in items], self.pad_id) for k in ("forget", "retain")}


def verbatim_pairs(data: Path) -> list[dict[str, str]]:
    """The VerbMem prompt/gt pairs, for the early-stopping check (empty if the folder has none)."""
    if not split_path(data, "verbmem", "forget").is_file():
        return []
    return read_split(data, "verbmem", "forget")


def forget_qa(data: Path) -> tuple[list[dict[str, str]], list[dict[str, str]]] | None:
    """KnowMem's forget questions and in-context examples, for the early-stopping check."""
    if not all(split_path(data, "knowmem", s).is_file() for s in ("forget_qa", "forget_qa_icl")):
        return None
    return read_split(data, "knowmem", "forget_qa"), read_split(data, "knowmem", "forget_qa_icl")
