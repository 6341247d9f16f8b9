"""One model request: the ``muse`` model's arguments read once, checked, resolved and opened.

lm-eval hands a model its arguments as ``--model_args`` strings; a sweep hands Python values with
the precision already resolved. :func:`read_request` turns either into a :class:`ModelRequest`:
every argument name, flag and number checked (a typo names the closest known argument), the
precision resolved once (a resolved :class:`Precision` passes through as it is), the device and
the context policy decided, and the checkpoint and its adapter opened and hashed. The runtime the
precision names (torch, or llama.cpp) builds from the request and re-reads nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from harness_ext.errors import MuseQuantError
from harness_ext.precision_names import DTYPE_PRECISIONS
from model_wrappers.model_arguments import (
    CONTEXT_POLICIES,
    FLAGS,
    LM_EVAL_LOADING,
    OWN,
    check_arguments,
    check_numbers,
    flag,
)
from model_wrappers.opening import OpenedCheckpoint, check_device, open_checkpoint, with_calibration
from model_wrappers.precisions import Precision, all_precision_options, resolve_precision
from model_wrappers.precisions.deployed import DeployedSource
from model_wrappers.provenance import provenance_record


@dataclass(frozen=True)
class ModelRequest:
    """Everything the runtimes need, decided once (module docstring)."""

    #: The arguments as given (with lm-eval's ``batch_size``/``device`` merged in).
    args: dict[str, Any]
    #: A local folder (absolute), a hub id, or a model object for lm-eval's own loader.
    pretrained: Any
    #: The resolved precision; None when lm-eval's own loader runs (``peft=`` & co., a model
    #: object), which then reads ``dtype`` itself.
    precision: Precision | None
    #: The checkpoint and adapter, checked and hashed (None with lm-eval's loader).
    opened: OpenedCheckpoint | None
    adapter: str | None
    merge: bool
    device: str
    context_overflow: str
    max_batch_tokens: int
    prefix_cache: bool
    #: The remaining arguments, for the runtime's lm-eval base class (HFLM's ``batch_size``,
    #: ``max_length``, ``tokenizer``, ...).
    lm_args: dict[str, Any] = field(default_factory=dict)
    #: This process's accelerate Accelerator when launched as several (data parallel), else None.
    accelerator: Any = None

    @property
    def runtime(self) -> str:
        """What evaluates the model: ``torch`` or the precision's own runtime (``llama.cpp``)."""
        return "torch" if self.precision is None else self.precision.runtime

    def provenance(self, library: dict[str, Any], **measured: Any) -> dict[str, Any]:
        """What the results file records of this model (``measured``: ``model=`` or
        ``weight_bytes=``, the bytes the runtime holds)."""
        assert self.precision is not None and self.opened is not None
        lora = self.opened.adapter
        source = self.opened.source
        return provenance_record(
            pretrained=self.pretrained,
            weights=self.opened.weights.files,
            adapter=self.adapter,
            adapter_files=lora.files if lora else None,
            adapter_base=self.opened.base_check,
            merge=self.merge,
            precision=self.precision.describe(),
            library=library,
            device=self.device,
            deployment=source.finish() if isinstance(source, DeployedSource) else None,
            gguf_source=self.opened.weights.gguf.describe() if self.opened.weights.gguf else None,
            **measured,
        )


def read_request(args: Mapping[str, Any]) -> ModelRequest:
    """The request for ``args`` (strings from ``--model_args`` or Python values), or a one-line
    :class:`MuseQuantError` naming the first bad argument, before anything loads."""
    args = dict(args)
    check_arguments(args)
    given = {**OWN, **args}
    pretrained = given.pop("pretrained")
    if pretrained is None or pretrained == "":
        raise MuseQuantError(
            "--model_args: pretrained= is missing; name a checkpoint folder or hub id, e.g. "
            "pretrained=path/to/model"
        )
    flags = {name: flag(name, given.pop(name)) for name in FLAGS}
    context_overflow = str(given.pop("context_overflow"))
    if context_overflow not in CONTEXT_POLICIES:
        raise MuseQuantError(
            f"--model_args context_overflow={context_overflow}: choose one of "
            f"{', '.join(CONTEXT_POLICIES)}"
        )
    check_numbers(given)
    max_batch_tokens = int(given.pop("max_batch_tokens"))
    dtype, precision, adapter = given.pop("dtype"), given.pop("precision"), given.pop("adapter")
    calibration = given.pop("calibration")
    options = {k: given.pop(k) for k in all_precision_options() if k in given}
    for key in ("tokenizer", "peft"):
        if key in given:
            given[key] = local_path(given[key])
    pretrained = local_path(pretrained)
    common = {
        "args": args,
        "adapter": adapter,
        "merge": flags["merge"],
        "context_overflow": context_overflow,
        "max_batch_tokens": max_batch_tokens,
        "prefix_cache": flags["prefix_cache"],
    }
    device = str(given.get("device") or "cpu")
    on_cpu = device.startswith("cpu") or not torch.cuda.is_available()
    native = sorted(k for k in LM_EVAL_LOADING if k in given)
    if native or not isinstance(pretrained, str):
        ours = [k for k in ("adapter", "precision", "calibration") if args.get(k) is not None]
        ours += [k for k in ("emulated",) if flags[k]] + sorted(options)
        if ours:
            what = f"{native[0]}=" if native else "a model object as pretrained"
            raise MuseQuantError(
                f"--model_args: {what} uses lm-eval's loader, which {ours[0]}= does not go "
                "through; use one or the other"
            )
        given["dtype"] = dtype if dtype is not None else "float32" if on_cpu else "auto"
        return ModelRequest(
            pretrained=pretrained, precision=None, opened=None, device=device, lm_args=given,
            **common,
        )  # fmt: skip
    spec = _precision(precision, dtype, on_cpu, options, flags["emulated"], calibration)
    accelerator = _data_parallel(on_cpu) if spec.runtime == "torch" else None
    if accelerator is not None:  # each process on its own device
        device = given["device"] = str(accelerator.device)
    device = check_device(device)
    opened = open_checkpoint(
        pretrained,
        adapter=adapter,
        merge=flags["merge"],
        allow_pickle=flags["allow_pickle"],
        trust_remote_code=flag("trust_remote_code", given.get("trust_remote_code", False)),
        device=device,
        allow_other_base=flags["allow_other_base"],
        shipped=spec.shipped,
    )
    if not isinstance(precision, Precision):
        if calibration is not None and not spec.calibrated:
            raise MuseQuantError(
                f"--model_args calibration={calibration}: {spec.name} uses no calibration "
                "texts (GPTQ and AWQ precisions do); drop it"
            )
        spec = with_calibration(spec, calibration, opened.weights)
    if spec.deployments:  # every runtime builds from the deployed weights
        opened = replace(opened, source=DeployedSource(opened.source, spec))
    return ModelRequest(
        pretrained=pretrained, precision=spec, opened=opened, device=device, lm_args=given,
        accelerator=accelerator, **common,
    )  # fmt: skip


def local_path(path: Any) -> Any:
    """An existing local folder (or file: a GGUF checkpoint) as an absolute path, so nothing
    mistakes it for a hub repo id."""
    if isinstance(path, str) and Path(path).expanduser().exists():
        return str(Path(path).expanduser().resolve())
    return path


def _precision(
    precision: Any,
    dtype: Any,
    on_cpu: bool,
    options: dict[str, Any],
    emulated: bool,
    calibration: Any,
) -> Precision:
    """The resolved precision: the one given (resolved already by a sweep), else from its name,
    else the full precision ``dtype`` names (float32 on CPU by default: the exact reference)."""
    if isinstance(precision, Precision):
        extra = [k for k, v in (("emulated", emulated), ("calibration", calibration)) if v]
        if extra or options:
            raise MuseQuantError(
                f"precision {precision.name} is already resolved: give "
                f"{(extra or sorted(options))[0]} to resolve_precision, not here"
            )
        return precision
    if precision is not None and dtype is not None:
        raise MuseQuantError(f"--model_args: dtype={dtype} and precision={precision}: pass one")
    if precision is None:
        precision = _full_precision(dtype, on_cpu)
    return resolve_precision(str(precision), options, emulated)


def _full_precision(dtype: Any, on_cpu: bool) -> str:
    """The precision a ``dtype`` asks for: float32 on CPU unless said (``auto`` would keep a
    checkpoint's fp16/bf16), bf16 for ``auto`` on GPU."""
    name = "float32" if dtype is None and on_cpu else str(dtype or "auto").removeprefix("torch.")
    if name == "auto":
        return "fp32" if on_cpu else "bf16"
    if name not in DTYPE_PRECISIONS:
        raise MuseQuantError(f"--model_args dtype={dtype}: use float32, bfloat16, float16 or auto")
    return DTYPE_PRECISIONS[name]


def _data_parallel(on_cpu: bool) -> Any:
    """The Accelerator of this process when launched as several (``torchrun``, ``accelerate
    launch``), else None. HFLM sets none up for a model object, nor on CPU: on CPU accelerate's
    gloo process group needs ``cpu=True``, given before anything else creates accelerate's state."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=on_cpu)
    return accelerator if accelerator.num_processes > 1 else None
