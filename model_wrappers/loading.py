"""Load a causal LM for evaluation: a checkpoint, or a base plus a LoRA adapter, at a precision.

``merge=True`` (default) merges the adapter into the float32 base and quantizes the merged
weights, as a deployment does; ``merge=False`` keeps the adapter unmerged on top of the quantized
base, as lm-eval's ``peft=`` does (docs/precisions.md explains why they differ). Weights load from
safetensors only unless ``allow_pickle=True``; remote code runs only with
``trust_remote_code=True``. Every refusal or bad input is a one-line :class:`MuseQuantError`.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import re
import tempfile
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness_ext.errors import MuseQuantError
from model_wrappers.precisions import (
    Calibration,
    build_precision,
    resolve_precision,
)
from model_wrappers.provenance import file_hashes, provenance_record

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
#: Files a hub snapshot needs (pickled weights only when allowed).
HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "tokenizer*"]
ADAPTER_KEY = re.compile(
    r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.\w+)?\.weight$"
)


def load_causal_lm(
    pretrained: str,
    *,
    adapter: str | None = None,
    merge: bool = True,
    precision: str = "fp32",
    emulated: bool = False,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    calibration: list[str] | str | None = None,
    device: str = "cpu",
    **precision_options: Any,
) -> tuple[Any, dict[str, Any]]:
    """The model ready for evaluation (a ``PreTrainedModel``; a ``PeftModelForCausalLM`` when
    ``merge=False``) and its provenance dict.

    ``calibration`` (GPTQ only): texts, a JSON file of texts, a MUSE data folder (its
    ``raw/retain1``) or ``news``/``books`` (MUSE's ``raw/retain1`` from the hub); default: a toy
    world's generic pretraining texts. Forget text is refused.
    """
    device = check_device(device)
    spec, build = resolve_precision(precision, precision_options, emulated)
    opened = open_checkpoint(
        pretrained,
        adapter=adapter,
        merge=merge,
        allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code,
        device=device,
    )
    weights, lora = opened.weights, opened.adapter
    if spec.family.calibrated:
        limit = spec.options.get("calibration_size")
        spec = replace(spec, calibration=resolve_calibration(calibration, weights.folder, limit))
    model, library = build_precision(opened.source, spec, build)
    if lora is not None and not merge:
        model = lora.attach(model, weights.label)
    model.eval()
    return model, provenance_record(
        pretrained=pretrained,
        weights=weights.files,
        adapter=adapter,
        adapter_files=lora.files if lora else None,
        merge=merge,
        precision=spec.describe(),
        library=library,
        device=device,
        model=model,
    )


@dataclass(frozen=True)
class OpenedCheckpoint:
    """A checkpoint and its adapter, checked and hashed, and the :class:`Checkpoint` every
    precision is built from (the base, or the base with the adapter to merge)."""

    weights: Checkpoint
    adapter: Adapter | None
    source: Checkpoint


def open_checkpoint(
    pretrained: str,
    *,
    adapter: str | None = None,
    merge: bool = True,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    device: str = "cpu",
) -> OpenedCheckpoint:
    """Check and hash a checkpoint (and adapter); inside :func:`reusing_checkpoints`, once."""
    key = (pretrained, adapter, bool(merge), allow_pickle, trust_remote_code, device)
    cache = _CHECKPOINT_CACHE.get()
    if cache is not None and key in cache:
        opened = cache[key]
    else:
        weights = Checkpoint.open(pretrained, allow_pickle, trust_remote_code, device)
        lora = Adapter.open(adapter, allow_pickle) if adapter else None
        source = replace(weights, adapter=lora) if lora is not None and merge else weights
        opened = OpenedCheckpoint(weights, lora, source)
    if cache is not None:
        for other in cache.values():
            if other.source is not opened.source:
                other.source.release()
        opened.source.resident = True
        cache[key] = opened
    return opened


#: The checkpoints :func:`reusing_checkpoints` keeps open, by ``open_checkpoint``'s arguments.
_CHECKPOINT_CACHE: ContextVar[dict[tuple, OpenedCheckpoint] | None] = ContextVar(
    "muse_quant_checkpoint_cache", default=None
)


@contextlib.contextmanager
def reusing_checkpoints() -> Iterator[None]:
    """Within this block, build every precision of a checkpoint from one copy of its weights.

    A sweep evaluates each checkpoint at many precisions: here its files are checked and hashed
    once, and its float32 weights (merged with the adapter when ``merge=True``) are read once
    and held in memory; every ``load_causal_lm`` of it builds its precision from them, with the
    same model and provenance as a fresh load. Only the checkpoint used last holds its weights
    (opening another releases them), so order the work by checkpoint.
    """
    token = _CHECKPOINT_CACHE.set({})
    try:
        yield
    finally:
        _CHECKPOINT_CACHE.reset(token)


def check_device(device: str) -> str:
    """``cpu`` or an available CUDA device, else a one-line error."""
    try:
        where = torch.device(device)
    except (RuntimeError, TypeError):
        raise MuseQuantError(f"device={device}: not a device name; use cpu or cuda[:N]") from None
    if where.type == "cuda" and not torch.cuda.is_available():
        raise MuseQuantError(
            f"device={device}: no CUDA device here (torch {torch.__version__}); use device=cpu"
        )
    if where.type not in ("cpu", "cuda"):
        raise MuseQuantError(f"device={device}: muse-quant runs on cpu or cuda")
    return str(where)


# --------------------------------------------------------------------------- weight files


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _resolve_folder(name: str, allow_pickle: bool, what: str) -> Path:
    """A local folder, or a hub id's snapshot (from the cache when offline)."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path.resolve()
    if path.exists():
        raise MuseQuantError(f"{what}={name}: a file, not a checkpoint folder")
    if name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise MuseQuantError(f"{what}={name}: no such folder")
    from huggingface_hub import snapshot_download

    patterns = HUB_PATTERNS + ([f"*{s}" for s in PICKLE_SUFFIXES] if allow_pickle else [])
    try:
        return Path(snapshot_download(name, allow_patterns=patterns))
    except Exception as e:  # the hub client raises many types; all mean "not available"
        raise MuseQuantError(
            f"{what}={name}: no such folder, and not a hub model available here ({_first_line(e)})"
        ) from None


def weight_files(folder: Path, stem: str, allow_pickle: bool, what: str) -> list[Path]:
    """The weight files of a checkpoint (``stem`` = ``model`` or ``adapter_model``), checked:
    safetensors headers readable, sharded indexes complete, pickles only when allowed."""
    from safetensors import safe_open

    index = folder / f"{stem}.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError) as e:
            raise MuseQuantError(f"{index}: unreadable shard index ({_first_line(e)})") from None
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
                f"{what}: {path} is not a readable safetensors file ({_first_line(e)}); "
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


@dataclass(frozen=True)
class Adapter:
    """A peft adapter folder, its checked files and their hashes."""

    folder: Path
    files: dict[str, str]
    weights: tuple[Path, ...]

    @classmethod
    def open(cls, name: str, allow_pickle: bool) -> Adapter:
        folder = _resolve_folder(name, allow_pickle, "adapter")
        config = folder / "adapter_config.json"
        if not config.is_file():
            raise MuseQuantError(f"adapter={name}: no adapter_config.json in {folder}")
        weights = weight_files(folder, "adapter_model", allow_pickle, f"adapter={name}")
        return cls(folder, file_hashes(folder, [config, *weights]), tuple(weights))

    def check_fits(self, model: nn.Module, base: str) -> None:
        """Every LoRA matrix names a module of ``model`` with matching in/out widths."""
        if self.weights[0].suffix != ".safetensors":
            return  # pickled adapters: peft's own loading checks them
        from safetensors import safe_open

        for path in self.weights:
            with safe_open(str(path), framework="pt") as f:
                shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}
            for key, shape in shapes.items():
                match = ADAPTER_KEY.match(key)
                if match is None:
                    continue
                name = match["module"]
                try:
                    module = model.get_submodule(name)
                except AttributeError:
                    raise MuseQuantError(
                        f"adapter {self.folder} does not fit {base}: it adapts {name}, which the "
                        "model does not have (wrong base model?)"
                    ) from None
                width = getattr(
                    module, "in_features" if match["ab"] == "A" else "out_features", None
                )
                wanted = shape[1] if match["ab"] == "A" else shape[0]
                if width is not None and width != wanted:
                    side = "input" if match["ab"] == "A" else "output"
                    raise MuseQuantError(
                        f"adapter {self.folder} does not fit {base}: {name} has {side} width "
                        f"{width}, the adapter's lora_{match['ab']} expects {wanted} "
                        "(wrong base model?)"
                    )

    def attach(self, model: nn.Module, base: str) -> Any:
        """``model`` with this adapter loaded unmerged (a ``PeftModelForCausalLM``)."""
        from peft import PeftModelForCausalLM

        self.check_fits(model, base)
        try:
            return PeftModelForCausalLM.from_pretrained(model, str(self.folder), is_trainable=False)
        except (ValueError, RuntimeError, KeyError, OSError) as e:
            raise MuseQuantError(
                f"adapter {self.folder} does not fit {base}: {_first_line(e)}"
            ) from None


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
    _float32_model: Any = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def open(
        cls, pretrained: str, allow_pickle: bool, trust_remote_code: bool, device: str
    ) -> Checkpoint:
        folder = _resolve_folder(pretrained, allow_pickle, "pretrained")
        config = folder / "config.json"
        if not config.is_file():
            raise MuseQuantError(f"pretrained={pretrained}: no config.json in {folder}")
        weights = weight_files(folder, "model", allow_pickle, f"pretrained={pretrained}")
        files = file_hashes(folder, [config, *weights])
        return cls(pretrained, folder, files, allow_pickle, trust_remote_code, device)

    @property
    def digest(self) -> str:
        """sha256 over the weight (and merged adapter) files' hashes."""
        parts = {"weights": self.files, "adapter": self.adapter.files if self.adapter else None}
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def load(self, **from_pretrained: Any) -> Any:
        """``from_pretrained`` of the checkpoint (the merged weights with an adapter)."""
        from transformers import AutoModelForCausalLM

        common = {"trust_remote_code": self.trust_remote_code, "device_map": {"": self.device}}
        try:
            if self.adapter is None and not self.resident:
                return AutoModelForCausalLM.from_pretrained(
                    str(self.folder),
                    use_safetensors=None if self.allow_pickle else True,
                    **common,
                    **from_pretrained,
                )
            held = self._float32()
            # A copy of the config: quantizing records its config in the one it is given.
            model = type(held).from_pretrained(
                None,
                config=copy.deepcopy(held.config),
                state_dict=held.state_dict(),
                **common,
                **from_pretrained,
            )
            model.config._name_or_path = held.config._name_or_path
            model.generation_config = copy.deepcopy(held.generation_config)
            return model
        except MuseQuantError:
            raise
        except (OSError, ValueError, RuntimeError, KeyError) as e:
            hint = ""
            if "trust_remote_code" in str(e):
                hint = "; it needs custom code: pass trust_remote_code=true if you trust it"
            raise MuseQuantError(
                f"pretrained={self.label}: cannot load it ({_first_line(e)}){hint}"
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
        from transformers import AutoTokenizer

        with tempfile.TemporaryDirectory(prefix="muse-quant-merged-") as tmp:
            self._float32().save_pretrained(tmp)
            AutoTokenizer.from_pretrained(str(self.folder)).save_pretrained(tmp)
            yield tmp


# --------------------------------------------------------------------------- calibration

#: MUSE layout folders whose texts must never calibrate (forget text, and the evaluation sets).
_EVAL_CONFIGS = ("verbmem", "knowmem", "privleak")


def resolve_calibration(
    calibration: list[str] | str | None, model_folder: Path, limit: int | None = None
) -> Calibration:
    """GPTQ's calibration texts (the first ``limit``): generic or retain text, never forget."""
    if isinstance(calibration, (list, tuple)):
        texts = [str(t) for t in calibration]
        source = "texts given by the caller"
    elif calibration is None:
        generic = _toy_world_generic(model_folder)
        if generic is None:
            raise MuseQuantError(
                f"GPTQ needs calibration texts and none is known for {model_folder}: pass "
                "calibration=<MUSE data folder> (its raw/retain1), calibration=news|books "
                "(MUSE's raw/retain1 from the hub) or calibration=<JSON list of generic texts>"
            )
        texts, source = _read_texts(generic), f"{generic} (toy world generic pretraining text)"
    else:
        texts, source = _calibration_from(str(calibration))
    if not texts:
        raise MuseQuantError(f"calibration {source}: no texts")
    return Calibration(tuple(texts[:limit]), source)


def _toy_world_generic(model_folder: Path) -> Path | None:
    """A toy world's generic pretraining texts, for a model inside that world."""
    for parent in list(model_folder.parents)[:4]:
        generic = parent / "pretrain" / "generic.json"
        if generic.is_file() and (parent / "manifest.json").is_file():
            return generic
    return None


def _calibration_from(spec: str) -> tuple[list[str], str]:
    from harness_ext.muse_data import CORPORA, load_split
    from harness_ext.muse_layout import read_split, split_path

    path = Path(spec).expanduser().resolve()
    if path.is_dir():
        records = read_split(path, "raw", "retain1")
        return [r["text"] for r in records], str(split_path(path, "raw", "retain1"))
    if path.is_file():
        if path.stem.startswith("forget") or path.parent.name in _EVAL_CONFIGS:
            raise MuseQuantError(
                f"calibration={spec}: calibrating on forget or evaluation text would leak it "
                "into the quantized weights; use generic text or raw/retain1"
            )
        return _read_texts(path), str(path)
    if spec in CORPORA:
        records, where = load_split(spec, "raw", "retain1", None)
        return [r["text"] for r in records], where
    raise MuseQuantError(
        f"calibration={spec}: not a file, a MUSE data folder or a corpus ({', '.join(CORPORA)})"
    )


def _read_texts(path: Path) -> list[str]:
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise MuseQuantError(f"calibration {path}: not a JSON file ({_first_line(e)})") from None
    if not isinstance(items, list) or not all(
        isinstance(x, str) or (isinstance(x, dict) and isinstance(x.get("text"), str))
        for x in items
    ):
        raise MuseQuantError(f'calibration {path}: expected a JSON list of strings or {{"text"}}')
    return [x if isinstance(x, str) else x["text"] for x in items]
