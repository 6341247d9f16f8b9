"""What a results file records about the evaluated model, so a board can say exactly what ran.

One JSON-able dict per loaded model: the resolved precision with the library's full config and
the calibration set's hash (``precision.calibration``), library versions, sha256 of every weight
and adapter file, the merge procedure, the device, and the bytes the model really holds.
"""

from __future__ import annotations

import platform
from typing import Any

import torch
from torch import nn

from harness_ext.versions import library_versions

MERGE_PROCEDURES = {
    True: "peft merge_and_unload of the adapter into the float32 base, then the merged weights "
    "are quantized as one checkpoint",
    False: "adapter kept unmerged (peft) on top of the quantized base; the adapter's own "
    "weights stay in floating point",
}


def device_description(device: str) -> dict[str, Any]:
    where = torch.device(device)
    if where.type == "cuda":
        name = torch.cuda.get_device_name(where)
    else:
        name = platform.processor() or platform.machine()
    return {"device": device, "name": name, "torch_threads": torch.get_num_threads()}


def resident_weight_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer as really held, quantization state included.

    A bitsandbytes 4-bit weight counts its packed bytes plus its absmax/code (nested too); a
    torchao weight counts its inner tensors (int8 codes, scales, zero points); an hqq layer
    counts the scales and zero points it keeps in its ``meta`` dict, outside its parameters; a
    dense weight counts its elements at its dtype.
    """
    seen: set[int] = set()
    total = 0
    held = [*model.parameters(), *model.buffers()]
    for module in model.modules():
        meta = getattr(module, "meta", None)  # hqq's HQQLinear
        if isinstance(meta, dict):
            held += [t for t in meta.values() if isinstance(t, torch.Tensor)]
    for tensor in held:
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        total += _tensor_bytes(tensor)
    return total


def _tensor_bytes(tensor: torch.Tensor) -> int:
    flatten = getattr(tensor, "__tensor_flatten__", None)
    if flatten is not None and type(tensor) not in (torch.Tensor, nn.Parameter):
        names, _ = flatten()
        inner = [getattr(tensor, n) for n in names]
        return sum(_tensor_bytes(t) for t in inner if isinstance(t, torch.Tensor))
    total = tensor.data.nelement() * tensor.data.element_size()
    state = getattr(tensor, "quant_state", None)  # bitsandbytes Params4bit
    if state is not None:
        total += sum(
            t.nelement() * t.element_size()
            for t in state.as_dict(packed=True).values()
            if isinstance(t, torch.Tensor)
        )
    scb = getattr(tensor, "SCB", None)  # bitsandbytes Int8Params: row scales
    if isinstance(scb, torch.Tensor):
        total += scb.nelement() * scb.element_size()
    return total


def provenance_record(
    *,
    pretrained: str,
    weights: dict[str, str],
    adapter: str | None,
    adapter_files: dict[str, str] | None,
    adapter_base: str | None,
    merge: bool,
    precision: dict[str, Any],
    library: dict[str, Any],
    device: str,
    deployment: list[dict[str, Any]] | None = None,
    gguf_source: dict[str, Any] | None = None,
    model: nn.Module | None = None,
    weight_bytes: int | None = None,
) -> dict[str, Any]:
    """The provenance dict of one loaded model (JSON-able); ``deployment``: what each deployment
    step did (pruning's sparsity per layer, relearning's documents); ``gguf_source``: the GGUF
    file ``pretrained`` named (its sha256 and types, shipped or dequantized); ``weight_bytes``
    for a model that is not a torch module (llama.cpp holds a GGUF file's tensors), else
    counted from ``model``."""
    return {
        "pretrained": pretrained,
        "weights_sha256": weights,
        "adapter": None
        if adapter is None
        else {
            "path": adapter,
            "files_sha256": adapter_files,
            "base": adapter_base,
            "merged": merge,
            "procedure": MERGE_PROCEDURES[merge],
        },
        "precision": {**precision, "library_config": library},
        **({"deployment": deployment} if deployment is not None else {}),
        **({"gguf_source": gguf_source} if gguf_source is not None else {}),
        "libraries": library_versions(),
        "device": device_description(device),
        "resident_weight_bytes": weight_bytes if model is None else resident_weight_bytes(model),
    }
