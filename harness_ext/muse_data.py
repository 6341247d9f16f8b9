"""Where a MUSE corpus comes from: the pinned hub datasets, or a local folder in the same layout.

The tasks read every split through :func:`load_split`, so the hub and a local folder (the toy
world's, or a user's own MUSE-format data) give the same records, validated the same way. The
folder is chosen with one option, ``muse_data=DIR`` (``--metadata muse_data=DIR`` on the command
line); without it the hub is used.

Context length: MUSE does not truncate. A text longer than the model's context is an error raised
by the ``muse`` model before anything is scored (``context_overflow=truncate`` is the documented
opt-out); see ``model_wrappers.muse_lm`` and docs/tasks.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from harness_ext.errors import MuseQuantError
from harness_ext.muse_layout import LAYOUT, read_split


@dataclass(frozen=True)
class HubCorpus:
    """One corpus on the hub at a pinned commit, with that commit's names for our splits."""

    repo: str
    revision: str
    #: (config, split) in the MUSE layout -> the split's name at ``revision``.
    renamed: dict[tuple[str, str], str] = field(default_factory=dict)


# Upstream renamed the splits once (``retain2_qa`` -> ``retain_qa``; Books' privleak ``retain2`` ->
# ``retain``) with byte-identical contents. We pin the last commits whose full hashes are public
# and map the names, so a later upstream change cannot silently alter the benchmark.
_KNOWMEM_RENAMES = {
    ("knowmem", "retain_qa"): "retain2_qa",
    ("knowmem", "retain_qa_icl"): "retain2_qa_icl",
}

#: corpus name -> its hub source.
CORPORA: dict[str, HubCorpus] = {
    "news": HubCorpus(
        "muse-bench/MUSE-News", "3a5169397006d2c67fe62f2110884de6c1863296", _KNOWMEM_RENAMES
    ),
    "books": HubCorpus(
        "muse-bench/MUSE-Books",
        "63a49b0da9a5291cd7dfbf0ca8728baf253597c6",
        {**_KNOWMEM_RENAMES, ("privleak", "retain"): "retain2"},
    ),
}


def check_corpus(corpus: str) -> HubCorpus:
    if corpus not in CORPORA:
        raise MuseQuantError(f"unknown MUSE corpus {corpus!r}; choose one of: {', '.join(CORPORA)}")
    return CORPORA[corpus]


def check_data_dir(data: str) -> Path:
    """The local folder ``muse_data`` names, or a one-line error if it is not a folder."""
    path = Path(data).expanduser()
    if not path.is_dir():
        raise MuseQuantError(
            f"muse_data={data}: no such folder; point it at a MUSE-layout folder "
            "(DIR/verbmem/forget.json, DIR/knowmem/..., DIR/privleak/...)"
        )
    return path


def load_split(
    corpus: str, config: str, split: str, data: str | None = None
) -> tuple[list[dict[str, str]], str]:
    """The validated records of one split and a label naming where they came from.

    ``data`` is a local folder (one corpus) or None for the hub. Records are dicts with exactly
    the layout's fields, in file order.
    """
    source = check_corpus(corpus)
    if data is not None:
        folder = check_data_dir(data)
        return read_split(folder, config, split), str(folder / config / f"{split}.json")
    return _load_hub(source, config, split)


def _load_hub(source: HubCorpus, config: str, split: str) -> tuple[list[dict[str, str]], str]:
    from datasets import load_dataset  # only for the hub; pyarrow takes ~1 s to import

    if config not in LAYOUT or split not in LAYOUT[config]:
        raise MuseQuantError(f"unknown MUSE split {config}/{split}")
    hub_split = source.renamed.get((config, split), split)
    where = f"{source.repo}@{source.revision[:12]}:{config}/{hub_split}"
    try:
        rows = list(load_dataset(source.repo, config, split=hub_split, revision=source.revision))
    except Exception as e:  # noqa: BLE001 - any hub failure gets the same one-line advice
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MuseQuantError(
            f"{where}: could not load from the hub ({first}); "
            "use a local copy with --metadata muse_data=DIR"
        ) from e
    if not rows:
        raise MuseQuantError(f"{where}: split is empty; it needs at least one record")
    fields = LAYOUT[config][split]
    for i, row in enumerate(rows):
        missing = [k for k in fields if not isinstance(row.get(k), str)]
        if missing:
            raise MuseQuantError(f"{where}: record {i} lacks string field(s) {', '.join(missing)}")
    return [{k: row[k] for k in fields} for row in rows], where
