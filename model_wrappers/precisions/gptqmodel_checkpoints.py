"""gptqmodel's quantize-save-load cycle, shared by GPTQ (``gptq.py``) and AWQ (``awq.py``).

gptqmodel quantizes a model on calibration texts into a checkpoint folder and loads that folder
back with one of its kernels. Both precisions cache the folder (``cached.py``) and run the
loaded kernels inside the float32 model. gptqmodel's workarounds live here: the CPU worker count
it needs to make progress on small machines, its console output (its logger, LogBar, prints to
whatever ``sys.stdout`` is when it writes: its banner on import, its per-layer tables while it
quantizes), which goes to stderr so that stdout keeps lm-eval's results alone, and its per-layer
log files, which it writes into a temporary folder removed once it is done.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness_ext.errors import MuseQuantError
from model_wrappers.precisions.base import Precision, Source
from model_wrappers.precisions.cached import cached_checkpoint
from model_wrappers.precisions.emulation import check_group_size

log = logging.getLogger(__name__)

GPTQMODEL_INSTALL = (
    "pip install 'muse-quant[gptq]' (gptqmodel 7.6.x, the last release for torch < 2.14, "
    "plus optimum, which peft requires once gptqmodel is installed)"
)


def gptqmodel_output() -> contextlib.AbstractContextManager[Any]:
    """Inside it, what gptqmodel prints goes to stderr (it writes to the current ``sys.stdout``)."""
    return contextlib.redirect_stdout(sys.stderr)


def import_gptqmodel(method: str) -> Any:
    """gptqmodel, or a one-line error saying how to install it (``method``: GPTQ, AWQ)."""
    # Its CPU quantizer stalls with one worker (its default on 2 cores).
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(max(2, ((os.cpu_count() or 1) + 1) // 2)))
    try:
        with gptqmodel_output():
            import gptqmodel  # optional (the gptq extra); prints a banner on import
    except ImportError as e:
        raise MuseQuantError(
            f"{method} precisions need gptqmodel ({e}); {GPTQMODEL_INSTALL}"
        ) from None
    return gptqmodel


def refuse_cuda_kernel(precision: Precision, device: str, cuda_backends: tuple[str, ...]) -> None:
    """Refuse a CUDA-only kernel (``backend=``) on another device, before anything loads."""
    backend = precision.options["backend"]
    if backend in cuda_backends and torch.device(device).type != "cuda":
        raise MuseQuantError(
            f"{precision.name}: the {backend} kernel runs on CUDA only, not on {device}; "
            "use backend=torch (or emulated=true) on this device"
        )


def quantized_checkpoint(
    gptqmodel: Any,
    source: Source,
    precision: Precision,
    config: dict[str, Any],
    method: str,
    dtype: torch.dtype = torch.float32,
    pack_backend: str = "auto",
) -> tuple[Path, bool]:
    """The folder gptqmodel writes when it quantizes the source's weights (loaded in ``dtype``)
    with ``QuantizeConfig(**config)`` on the calibration texts, packing into the kernel
    ``pack_backend``; cached, keyed by the weights' hash, ``config``, the texts' hash and
    gptqmodel's version. Returns the folder and whether it was a cache hit."""
    if precision.calibration is None:
        raise MuseQuantError(
            f"{precision.name}: {method} needs calibration texts; pass calibration="
        )
    texts = list(precision.calibration.texts)
    key = {
        "weights": source.digest,
        "quantize_config": config,
        "calibration_sha256": precision.calibration.sha256,
        "gptqmodel": gptqmodel.__version__,
    }
    device = torch.device(source.device)

    def write(out: Path) -> None:
        quantize_config = gptqmodel.QuantizeConfig(**config, offload_to_disk=False)
        with source.weights_folder() as weights, gptqmodel_output(), _layer_logs(gptqmodel):
            model = gptqmodel.GPTQModel.load(
                weights,
                quantize_config,
                device="cpu" if device.type == "cpu" else str(device),
                dtype=dtype,
                trust_remote_code=source.trust_remote_code,
            )
            check_group_size(model.model, precision)
            log.info("%s-quantizing %s on %d calibration texts", method, precision.name, len(texts))
            model.quantize(texts, backend=gptqmodel.BACKEND(pack_backend))
            model.save(str(out))

    return cached_checkpoint(key, write)


@contextlib.contextmanager
def _layer_logs(gptqmodel: Any) -> Iterator[None]:
    """gptqmodel's per-layer log files (one per quantization, in ``./logs`` of whatever folder
    the user runs from, never deleted: ``LoopProcessor._build_log_file_path``) written into a
    temporary folder instead, removed once its writer thread has finished with them."""
    from gptqmodel.looper import loop_processor  # imported by import_gptqmodel already

    before = loop_processor._PROJECT_LOG_DIR
    with tempfile.TemporaryDirectory(prefix="muse-quant-gptqmodel-logs-") as folder:
        loop_processor._PROJECT_LOG_DIR = Path(folder)
        try:
            yield
        finally:
            gptqmodel.DEVICE_THREAD_POOL.wait()  # the log lines it still has queued
            loop_processor._PROJECT_LOG_DIR = before


def load_quantized(gptqmodel: Any, folder: Path, source: Source, precision: Precision) -> nn.Module:
    """The checkpoint in ``folder`` loaded with gptqmodel's kernels (``torch`` in emulated mode),
    computing in the precision's ``compute_dtype``.

    The torch kernels accept fp16/bf16 models only. Their fp16 scales are exact, so float32
    compute loads the checkpoint at fp16 and puts its quantized modules into the float32 source
    model (GPTQ's kernel then casts its dequantized weight to the float32 input; AWQ's casts the
    input to fp16, see ``awq.py``); of the other tensors, those the quantizer rewrote (AWQ
    divides the norm before a layer by its scales) come from the checkpoint, the rest stay the
    source's float32 ones.
    """
    compute = precision.compute_dtype
    backend = "torch" if precision.emulated else precision.options["backend"]
    with gptqmodel_output():
        loaded = gptqmodel.GPTQModel.load(
            str(folder),
            device=str(torch.device(source.device)),
            backend=gptqmodel.BACKEND(backend),
            dtype=torch.float16 if compute == torch.float32 else compute,
            trust_remote_code=source.trust_remote_code,
        ).model
    if compute != torch.float32:
        return loaded
    model = source.load(dtype=torch.float32)
    kernel = gptqmodel.nn_modules.qlinear.BaseQuantLinear
    for name, module in list(loaded.named_modules()):
        if isinstance(module, kernel):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, module)
    mine = model.state_dict()
    with torch.no_grad():
        for name, tensor in loaded.state_dict().items():
            if name in mine and not torch.equal(tensor, mine[name].to(tensor.dtype)):
                mine[name].copy_(tensor)
    return model


def library_record(folder: Path, hit: bool, precision: Precision) -> dict[str, Any]:
    """What the provenance records: gptqmodel's ``quantize_config.json``, kernel and cache."""
    return {
        "quantize_config": json.loads((folder / "quantize_config.json").read_text()),
        "backend": "torch" if precision.emulated else precision.options["backend"],
        "cache": {"folder": str(folder), "hit": hit},
    }
