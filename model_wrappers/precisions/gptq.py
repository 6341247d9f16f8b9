"""GPTQ through gptqmodel (``gptq-w{bits}g{group}``): calibrated, quantized once and cached.

auto-gptq is archived and does not import with transformers 5; gptqmodel is its maintained
successor (the optional ``gptq`` extra). Its workarounds live here: the CPU worker count it
needs to make progress on small machines, and where it writes its per-layer logs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness_ext.cache import cache_root
from harness_ext.errors import MuseQuantError
from harness_ext.files import staged_dir
from harness_ext.locks import wait_lock
from model_wrappers.precisions.emulation import check_group_size
from model_wrappers.precisions.registry import (
    COMPUTE_DTYPE,
    Built,
    Family,
    Option,
    Precision,
    Source,
    parse_bool,
    positive_int,
    register,
)

log = logging.getLogger(__name__)

#: Written last into a cached checkpoint: its key, and the sign that it is complete.
KEY_FILE = "muse_quant_key.json"

GPTQ_INSTALL = (
    "pip install 'muse-quant[gptq]' (gptqmodel 7.6.x, the last release for torch < 2.14, "
    "plus optimum, which peft requires once gptqmodel is installed)"
)
#: gptqmodel kernels that only run on CUDA; ``torch`` runs anywhere.
GPTQ_CUDA_BACKENDS = ("marlin", "exllama_v2", "machete", "triton", "bitblas")
GPTQ_BACKENDS = ("torch", "auto", *GPTQ_CUDA_BACKENDS)


def _gptq_dequantize(module: nn.Module) -> torch.Tensor | None:
    from gptqmodel.nn_modules.qlinear import BaseQuantLinear  # optional; prints a banner

    if isinstance(module, BaseQuantLinear):
        return module.dequantize_weight().T
    return None


def _parse_backend(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in GPTQ_BACKENDS:
        raise ValueError(f"expected one of {', '.join(GPTQ_BACKENDS)}")
    return text


GPTQ = Family("gptqmodel", _gptq_dequantize, calibrated=True)
GPTQ_OPTIONS = {
    "sym": Option(True, parse_bool, "symmetric quantization grid"),
    "desc_act": Option(False, parse_bool, "quantize columns by decreasing activation order"),
    "damp_percent": Option(0.05, float, "Hessian dampening"),
    "calibration_size": Option(256, positive_int, "at most this many calibration texts"),
    "compute_dtype": COMPUTE_DTYPE,
    "backend": Option("torch", _parse_backend, "gptqmodel kernel"),
}


def import_gptqmodel() -> Any:
    """gptqmodel, or a one-line error saying how to install it."""
    # Its CPU quantizer stalls with one worker (its default on 2 cores).
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(max(2, ((os.cpu_count() or 1) + 1) // 2)))
    try:
        import gptqmodel  # optional (the gptq extra); prints a banner on import
    except ImportError as e:
        raise MuseQuantError(f"GPTQ precisions need gptqmodel ({e}); {GPTQ_INSTALL}") from None
    return gptqmodel


def cached_checkpoint(key: dict[str, Any], write: Callable[[Path], None]) -> tuple[Path, bool]:
    """The folder cached under ``key`` (written by ``write`` on a miss) and whether it was a hit.

    A miss writes into a staged folder published whole, so an interrupted write never leaves a
    half checkpoint behind. The entry's lock makes it one computation across processes and
    machines sharing the cache: a second process needing it waits, then reads the first's.
    """
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    folder = cache_root() / "quantized" / digest
    if (folder / KEY_FILE).is_file():
        return folder, True

    def note(seconds: float) -> None:
        log.warning("waiting for another process quantizing %s (%.0f s)", folder, seconds)

    with wait_lock(folder.with_name(f"{folder.name}.lock"), note):
        if (folder / KEY_FILE).is_file():  # the process we waited for wrote it
            return folder, True
        with staged_dir(folder, replace=False) as tmp:
            write(tmp)
            (tmp / KEY_FILE).write_text(json.dumps(key, indent=1, sort_keys=True))
    return folder, False


def quantize_gptq(source: Source, precision: Precision) -> Built:
    """GPTQ with gptqmodel: quantized once from float32 weights on the calibration texts and
    cached (keyed by weights hash, precision and calibration), then loaded with its kernels."""
    gptqmodel = import_gptqmodel()
    bits, group = precision.params["bits"], precision.params["group_size"]
    options = precision.options
    if not 2 <= bits <= 8:
        raise MuseQuantError(f"{precision.name}: gptqmodel quantizes 2 to 8 bits, not {bits}")
    device = torch.device(source.device)
    if options["backend"] in GPTQ_CUDA_BACKENDS and device.type != "cuda":
        raise MuseQuantError(
            f"{precision.name}: the {options['backend']} kernel runs on CUDA only, not on "
            f"{source.device}; use backend=torch (or emulated=true) on this device"
        )
    if precision.calibration is None:
        raise MuseQuantError(f"{precision.name}: GPTQ needs calibration texts; pass calibration=")
    texts = list(precision.calibration.texts)
    quantize = {
        "bits": bits,
        "group_size": group,
        "sym": options["sym"],
        "desc_act": options["desc_act"],
        "damp_percent": options["damp_percent"],
    }
    key = {
        "weights": source.digest,
        "quantize_config": quantize,
        "calibration_sha256": precision.calibration.sha256,
        "gptqmodel": gptqmodel.__version__,
    }

    def write(out: Path) -> None:
        # gptqmodel writes a per-layer log into ./logs of whatever folder the user runs from;
        # keep it next to the quantized checkpoints instead.
        from gptqmodel.looper import loop_processor  # imported by import_gptqmodel already

        loop_processor._PROJECT_LOG_DIR = cache_root() / "gptq-logs"
        config = gptqmodel.QuantizeConfig(**quantize, offload_to_disk=False)
        with source.weights_folder() as weights:
            model = gptqmodel.GPTQModel.load(
                weights,
                config,
                device="cpu" if device.type == "cpu" else str(device),
                dtype=torch.float32,
                trust_remote_code=source.trust_remote_code,
            )
            check_group_size(model.model, precision)
            log.info("GPTQ-quantizing %s on %d calibration texts", precision.name, len(texts))
            model.quantize(texts)
            model.save(str(out))

    folder, hit = cached_checkpoint(key, write)
    compute = precision.compute_dtype
    backend = "torch" if precision.emulated else options["backend"]
    # The CPU kernel accepts fp16/bf16 models only; its fp16 scales are exact, and it casts the
    # dequantized weight to the input's dtype, so float32 compute keeps the kernel's modules in a
    # float32 model (everything outside them from the float32 source, as the checkpoint holds).
    loaded = gptqmodel.GPTQModel.load(
        str(folder),
        device=str(device),
        backend=gptqmodel.BACKEND(backend),
        dtype=torch.float16 if compute == torch.float32 else compute,
        trust_remote_code=source.trust_remote_code,
    ).model
    if compute == torch.float32:
        model = source.load(dtype=torch.float32)
        kernel = gptqmodel.nn_modules.qlinear.BaseQuantLinear
        for name, module in list(loaded.named_modules()):
            if isinstance(module, kernel):
                parent, _, child = name.rpartition(".")
                setattr(model.get_submodule(parent), child, module)
    else:
        model = loaded
    config = json.loads((folder / "quantize_config.json").read_text())
    return model, {
        "quantize_config": config,
        "backend": backend,
        "cache": {"folder": str(folder), "hit": hit},
    }


register(
    r"gptq-w(?P<bits>\d+)g(?P<group_size>\d+)",
    quantize_gptq,
    GPTQ,
    GPTQ_OPTIONS,
    "gptq-w{bits}g{group}",
)
