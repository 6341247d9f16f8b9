"""Checkpoint folders: found, checked and hashed before any weight is read.

A :class:`Checkpoint` is the :class:`~model_wrappers.precisions.Source` every precision is built
from: its safetensors files (pickles only with ``allow_pickle``), optionally with a LoRA adapter
(``model_wrappers.adapters``) to merge in float32. ``pretrained=`` may also name a GGUF file
(:func:`gguf_path`), which ``model_wrappers.precisions.gguf_checkpoint`` turns into a checkpoint
folder. Every refusal is a one-line :class:`MuseQuantError`.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer

from harness_ext.errors import MuseQuantError, first_line
from harness_ext.files import file_hashes

if TYPE_CHECKING:  # an adapter is opened against a checkpoint (adapters.py imports this)
    from model_wrappers.adapters import Adapter
    from model_wrappers.precisions.gguf_checkpoint import GgufSource  # it imports this too

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
#: Files a hub snapshot needs (pickled weights only when allowed).
HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "tokenizer*"]


def gguf_path(pretrained: str) -> Path | None:
    """The GGUF file ``pretrained`` names: a ``.gguf`` file, or a folder holding exactly one and
    no ``config.json`` (a folder with one is a Hugging Face checkpoint); None otherwise."""
    path = Path(pretrained).expanduser()
    if path.suffix.lower() == ".gguf" and not path.is_dir():
        if not path.is_file():
            raise MuseQuantError(f"pretrained={pretrained}: no such GGUF file")
        return path.resolve()
    if not path.is_dir() or (path / "config.json").exists():
        return None
    found = sorted(p.name for p in path.iterdir() if p.suffix.lower() == ".gguf" and p.is_file())
    if len(found) > 1:
        raise MuseQuantError(
            f"pretrained={pretrained}: {len(found)} GGUF files in a folder without config.json "
            f"({', '.join(found)}); name the one to evaluate, e.g. pretrained={path / found[0]}"
        )
    return (path / found[0]).resolve() if found else None


def resolve_folder(name: str, allow_pickle: bool, what: str) -> Path:
    """A local folder, or a hub id's snapshot (from the cache when offline)."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists():
        raise MuseQuantError(f"{what}={name}: a file, not a checkpoint folder (nor a .gguf file)")
    if name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise MuseQuantError(f"{what}={name}: no such folder")
    from huggingface_hub import snapshot_download  # the hub client: only for hub ids

    patterns = HUB_PATTERNS + ([f"*{s}" for s in PICKLE_SUFFIXES] if allow_pickle else [])
    try:
        return Path(snapshot_download(name, allow_patterns=patterns))
    except Exception as e:  # the hub client raises many types; all mean "not available"
        raise MuseQuantError(
            f"{what}={name}: no such folder, and not a hub model available here ({first_line(e)})"
        ) from None


def weight_files(folder: Path, stem: str, allow_pickle: bool, what: str) -> list[Path]:
    """The weight files of a checkpoint (``stem`` = ``model`` or ``adapter_model``), checked:
    safetensors headers readable, sharded indexes complete, pickles only when allowed."""
    index = folder / f"{stem}.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError) as e:
            raise MuseQuantError(f"{index}: unreadable shard index ({first_line(e)})") from None
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise MuseQuantError(
                f"{what}: shard {folder / missing[0]} listed in {index.name} is missing"
            )
        safetensors = [folder / s for s in shards]
    else:
        safetensors = sorted(folder.glob(f"{stem}*.safetensors"))
    for path in safetensors:
        try:
            with safe_open(str(path), framework="pt") as f:
                f.keys()
        except Exception as e:  # safetensors raises its own error type for a bad header
            raise MuseQuantError(
                f"{what}: {path} is not a readable safetensors file ({first_line(e)}); "
                "re-download or re-save it"
            ) from None
    if safetensors:
        return safetensors
    pickles = sorted(p for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES and stem in p.name)
    if pickles and not allow_pickle:
        raise MuseQuantError(
            f"{what}: {folder} holds only pickled weights ({pickles[0].name}); unpickling can run "
            "arbitrary code, so convert them to safetensors or pass allow_pickle=true"
        )
    if pickles:
        return pickles
    raise MuseQuantError(
        f"{what}: no weight file in {folder} (expected {stem}.safetensors or a shard index)"
    )


@dataclass
class Checkpoint:
    """A full-precision checkpoint folder, optionally with an adapter to merge into it: the
    :class:`~model_wrappers.precisions.Source` every precision function starts from."""

    label: str
    folder: Path
    files: dict[str, str]
    allow_pickle: bool
    trust_remote_code: bool
    device: str
    adapter: Adapter | None = None
    #: Keep the float32 weights in memory after the first load and build every load from them.
    resident: bool = False
    #: The GGUF file ``pretrained=`` named, when this folder was made from one.
    gguf: GgufSource | None = None
    _float32_model: Any = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def open(
        cls, pretrained: str, allow_pickle: bool, trust_remote_code: bool, device: str
    ) -> Checkpoint:
        folder = resolve_folder(pretrained, allow_pickle, "pretrained")
        config = folder / "config.json"
        if not config.is_file():
            raise MuseQuantError(f"pretrained={pretrained}: no config.json in {folder}")
        weights = weight_files(folder, "model", allow_pickle, f"pretrained={pretrained}")
        files = file_hashes(folder, [config, *weights])
        return cls(pretrained, folder, files, allow_pickle, trust_remote_code, device)

    @property
    def tokenizer_name(self) -> str:
        """What ``AutoTokenizer`` reads: the name given (a hub id keeps its name), or for a GGUF
        file the folder made from it."""
        return str(self.folder) if self.gguf is not None else self.label

    @property
    def digest(self) -> str:
        """sha256 over the weight (and merged adapter) files' hashes."""
        parts = {"weights": self.files, "adapter": self.adapter.files if self.adapter else None}
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def load(self, **from_pretrained: Any) -> Any:
        """``from_pretrained`` of the checkpoint (the merged weights with an adapter)."""
        common = {"trust_remote_code": self.trust_remote_code, "device_map": {"": self.device}}
        try:
            if self.adapter is None and not self.resident:
                return AutoModelForCausalLM.from_pretrained(
                    str(self.folder),
                    use_safetensors=None if self.allow_pickle else True,
                    **common,
                    **from_pretrained,
                )
            return from_held(self._float32(), **common, **from_pretrained)
        except MuseQuantError:
            raise
        except (OSError, ValueError, RuntimeError, KeyError) as e:
            hint = ""
            if "trust_remote_code" in str(e):
                hint = "; it needs custom code: pass trust_remote_code=true if you trust it"
            raise MuseQuantError(
                f"pretrained={self.label}: cannot load it ({first_line(e)}){hint}"
            ) from None

    def _float32(self) -> Any:
        """The float32 weights, read once: the checkpoint's, or the base with the adapter merged
        in (peft ``merge_and_unload``)."""
        if self._float32_model is None:
            base = replace(self, adapter=None, resident=False).load(dtype=torch.float32)
            if self.adapter is not None:
                base = self.adapter.attach(base, self.label).merge_and_unload()
            self._float32_model = base
        return self._float32_model

    def release(self) -> None:
        """Drop the float32 weights held in memory (the next load reads them again)."""
        self._float32_model = None

    @contextlib.contextmanager
    def weights_folder(self) -> Iterator[str]:
        """The checkpoint folder; with an adapter, a temporary folder holding the merged model."""
        if self.adapter is None:
            yield str(self.folder)
            return
        with written_folder(self._float32(), self.folder, "merged") as tmp:
            yield tmp


def from_held(held: Any, **from_pretrained: Any) -> Any:
    """A new model from weights held in memory, through ``from_pretrained`` (so a quantization
    config applies as it does to a file's weights)."""
    # A copy of the config: quantizing records its config in the one it is given.
    model = type(held).from_pretrained(
        None, config=copy.deepcopy(held.config), state_dict=held.state_dict(), **from_pretrained
    )
    model.config._name_or_path = held.config._name_or_path
    model.generation_config = copy.deepcopy(held.generation_config)
    return model


@contextlib.contextmanager
def written_folder(model: Any, folder: Path, what: str) -> Iterator[str]:
    """A temporary checkpoint folder holding ``model`` and the tokenizer of ``folder``, for
    libraries that read files themselves (GPTQ, llama.cpp's writer)."""
    with tempfile.TemporaryDirectory(prefix=f"muse-quant-{what}-") as tmp:
        model.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(str(folder)).save_pretrained(tmp)
        yield tmp
