"""Load a causal LM for evaluation: a checkpoint, or a base plus a LoRA adapter, at a precision.

``merge=True`` (default) merges the adapter into the float32 base and quantizes the merged
weights, as a deployment does; ``merge=False`` keeps the adapter unmerged on top of the quantized
base, as lm-eval's ``peft=`` does (docs/precisions.md explains why they differ).
"""

from __future__ import annotations

from typing import Any

from model_wrappers.precisions import Precision, build_precision
from model_wrappers.request import ModelRequest, read_request


def load_model(request: ModelRequest) -> tuple[Any, dict[str, Any]]:
    """The model of a torch-runtime request, ready for evaluation (a ``PreTrainedModel``; a
    ``PeftModelForCausalLM`` when ``merge=False``), and its provenance."""
    assert request.precision is not None and request.opened is not None
    weights, lora = request.opened.weights, request.opened.adapter
    model, library = build_precision(request.opened.source, request.precision)
    if lora is not None and not request.merge:
        model = lora.attach(model, weights.label)
    model.eval()
    return model, request.provenance(library, model=model)


def load_causal_lm(
    pretrained: str, precision: str | Precision = "fp32", **args: Any
) -> tuple[Any, dict[str, Any]]:
    """:func:`load_model` from the ``muse`` model's arguments, as Python values: ``adapter``,
    ``merge``, ``emulated``, ``allow_pickle``, ``trust_remote_code``, ``calibration``,
    ``device``, ``allow_other_base`` and the precision's options.

    ``precision`` is a name, or a :class:`Precision` already resolved (with its calibration, as
    a sweep does once per cell), then used as it is. ``calibration`` (GPTQ, AWQ): texts, a JSON
    file of texts, a MUSE data folder (its ``raw/retain1``) or ``news``/``books``; default: a
    toy world's generic pretraining texts (a world on a pretrained base: its retain text).
    Forget text is refused.
    """
    return load_model(read_request({"pretrained": pretrained, "precision": precision, **args}))
