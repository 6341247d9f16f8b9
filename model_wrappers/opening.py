"""Opening a checkpoint for evaluation: its files checked and hashed, its adapter checked against
the base it records, and, inside :func:`reusing_checkpoints`, kept open for the next precision.

Every refusal or bad input is a one-line :class:`MuseQuantError`: weights load from safetensors
only unless ``allow_pickle=True``; remote code runs only with ``trust_remote_code=True``.

A GGUF file given as ``pretrained=`` is opened here once, as what its precision needs
(``model_wrappers.precisions.gguf_checkpoint``): the file as shipped for ``gguf-shipped``, else
the Hugging Face folder of its dequantized weights, an ordinary :class:`Checkpoint` from then on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, replace

import torch

from harness_ext.errors import MuseQuantError
from harness_ext.precision_names import SHIPPED_GGUF
from model_wrappers.adapters import Adapter
from model_wrappers.calibration import resolve_calibration
from model_wrappers.checkpoints import Checkpoint, gguf_path
from model_wrappers.precisions import Precision
from model_wrappers.precisions.gguf_checkpoint import gguf_checkpoint


def with_calibration(
    precision: Precision, calibration: list[str] | str | None, checkpoint: Checkpoint
) -> Precision:
    """``precision`` with its calibration texts resolved, if its library is calibrated."""
    if not precision.calibrated:
        return precision
    limit = precision.options.get("calibration_size")
    texts = resolve_calibration(calibration, checkpoint.folder, limit, checkpoint.label)
    return replace(precision, calibration=texts)


@dataclass(frozen=True)
class OpenedCheckpoint:
    """A checkpoint and its adapter, checked and hashed, and the :class:`Checkpoint` every
    precision is built from (the base, or the base with the adapter to merge)."""

    weights: Checkpoint
    adapter: Adapter | None
    source: Checkpoint
    #: How the adapter's base was checked (None without an adapter).
    base_check: str | None = None


def open_checkpoint(
    pretrained: str,
    *,
    adapter: str | None = None,
    merge: bool = True,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    device: str = "cpu",
    allow_other_base: bool = False,
    shipped: bool = False,
) -> OpenedCheckpoint:
    """Check and hash a checkpoint (and adapter, against the base it records); inside
    :func:`reusing_checkpoints`, once. ``shipped``: the precision is ``gguf-shipped``, which
    evaluates a GGUF checkpoint's own file (refused for any other checkpoint, and with an
    adapter, which that file does not hold)."""
    key = (pretrained, adapter, bool(merge), allow_pickle, trust_remote_code, device)
    key += (allow_other_base, shipped)
    cache = _CHECKPOINT_CACHE.get()
    if cache is not None and key in cache:
        opened = cache[key]
    else:
        if shipped and adapter:
            raise MuseQuantError(
                f"adapter={adapter}: {SHIPPED_GGUF} evaluates the GGUF file as shipped, which "
                "holds no adapter; merge it with another precision (gguf-q8_0 re-quantizes the "
                "dequantized file with the adapter merged)"
            )
        weights = _open_weights(pretrained, allow_pickle, trust_remote_code, device, shipped)
        lora = Adapter.open(adapter, allow_pickle) if adapter else None
        base_check = lora.check_base(weights, allow_other_base) if lora else None
        source = replace(weights, adapter=lora) if lora is not None and merge else weights
        opened = OpenedCheckpoint(weights, lora, source, base_check)
    if cache is not None:
        for other in cache.values():
            if other.source is not opened.source:
                other.source.release()
        opened.source.resident = True
        cache[key] = opened
    return opened


def _open_weights(
    pretrained: str, allow_pickle: bool, trust_remote_code: bool, device: str, shipped: bool
) -> Checkpoint:
    """The checkpoint ``pretrained`` names: a GGUF file's (as shipped, or dequantized) or a
    checkpoint folder's."""
    path = gguf_path(pretrained)
    if path is not None:
        return gguf_checkpoint(
            pretrained, path, shipped=shipped, trust_remote_code=trust_remote_code, device=device
        )
    if shipped:
        raise MuseQuantError(
            f"precision {SHIPPED_GGUF} evaluates a GGUF file as shipped, and pretrained="
            f"{pretrained} is not one; name a .gguf file, or convert this checkpoint with a "
            "gguf-{type} precision (gguf-q8_0, gguf-q4_k_m, ...)"
        )
    return Checkpoint.open(pretrained, allow_pickle, trust_remote_code, device)


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
