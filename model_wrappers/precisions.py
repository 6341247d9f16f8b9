"""The precision registry: one function per precision, one line to register it.

A precision function receives a :class:`Source` (full-precision weights: a checkpoint folder, or a
base with a LoRA adapter merged in float32) and the resolved :class:`Precision`, and returns the
model ready for evaluation plus a JSON-able description of what the library did. Names are parsed
by pattern, so ``gptq-w3g64`` and ``rtn-w8g32`` need no entry of their own.

Adding a precision::

    def quantize_hqq(source: Source, precision: Precision) -> Built:
        ...                                    # load, quantize, return (model, library record)

    register(r"hqq-w(?P<bits>\\d+)g(?P<group_size>\\d+)", quantize_hqq, HQQ_FAMILY, HQQ_OPTIONS)

Quantized precisions quantize every ``nn.Linear`` of the transformer blocks; embeddings and the
output head stay at full precision (each library's default). ``emulated`` mode replaces each
quantized module by a dense ``nn.Linear`` holding the library's own dequantization of its weight.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from harness_ext.errors import MuseQuantError

log = logging.getLogger(__name__)


class Source(Protocol):
    """Full-precision weights a precision function starts from (built by ``loading.py``)."""

    #: sha256 identifying the full-precision weights (and a merged adapter): the cache key.
    digest: str
    device: str
    trust_remote_code: bool

    def load(self, **from_pretrained: Any) -> Any:
        """The model through ``from_pretrained`` with these extra arguments (dtype, quantization
        config), placed on ``device``."""

    def weights_folder(self) -> contextlib.AbstractContextManager[str]:
        """A folder holding the weights (merged ones written out), for libraries that read
        files themselves."""


@dataclass(frozen=True)
class Calibration:
    """Texts a calibrated quantizer (GPTQ) sees, with where they came from and their hash."""

    texts: tuple[str, ...]
    source: str

    @property
    def sha256(self) -> str:
        """sha256 of the texts' JSON list: the calibration set's identity."""
        return hashlib.sha256(json.dumps(list(self.texts)).encode()).hexdigest()

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "n_texts": len(self.texts), "sha256": self.sha256}


@dataclass(frozen=True)
class Family:
    """A quantization library and, for emulated mode, how it dequantizes one of its modules
    (``None`` for a module it did not quantize); ``calibrated`` libraries need calibration text."""

    name: str
    dequantize: Callable[[nn.Module], torch.Tensor | None] | None = None
    calibrated: bool = False


@dataclass(frozen=True)
class Option:
    default: Any
    parse: Callable[[Any], Any]
    help: str


@dataclass(frozen=True)
class Precision:
    """A resolved precision: name, library, the parameters read from the name, all options."""

    name: str
    family: Family
    params: dict[str, int]
    options: dict[str, Any]
    emulated: bool = False
    calibration: Calibration | None = None

    @property
    def compute_dtype(self) -> torch.dtype:
        return getattr(torch, self.options["compute_dtype"])

    def describe(self) -> dict[str, Any]:
        """JSON-able: what a results file records about the precision."""
        return {
            "name": self.name,
            "library": self.family.name,
            "params": dict(self.params),
            "options": dict(self.options),
            "emulated": self.emulated,
            "calibration": self.calibration.describe() if self.calibration else None,
        }


#: What a precision function returns: the model, and what the library did (JSON-able).
Built = tuple[Any, dict[str, Any]]
Build = Callable[[Source, Precision], Built]


@dataclass(frozen=True)
class Entry:
    pattern: re.Pattern[str]
    build: Build
    family: Family
    options: Mapping[str, Option] = field(default_factory=dict)
    example: str = ""
    #: Why emulated mode cannot reproduce this precision (``None``: it can).
    not_emulable: str | None = None


REGISTRY: list[Entry] = []


def register(
    pattern: str,
    build: Build,
    family: Family,
    options: Mapping[str, Option] | None = None,
    example: str | None = None,
    not_emulable: str | None = None,
) -> None:
    """Add a precision: ``pattern`` is a name or a regex whose named groups are int parameters."""
    entry = Entry(
        re.compile(pattern), build, family, dict(options or {}), example or pattern, not_emulable
    )
    REGISTRY.append(entry)


def known_precisions() -> list[str]:
    return [e.example for e in REGISTRY]


def all_precision_options() -> set[str]:
    """Every option name some precision accepts (model arguments to route to the loader)."""
    return {key for entry in REGISTRY for key in entry.options}


def resolve_precision(
    name: str,
    options: Mapping[str, Any] | None = None,
    emulated: bool = False,
    calibration: Calibration | None = None,
) -> tuple[Precision, Build]:
    """Parse a precision name and its options (strings from ``--model_args`` accepted)."""
    options = dict(options or {})
    for entry in REGISTRY:
        match = entry.pattern.fullmatch(name)
        if match is None:
            continue
        unknown = sorted(set(options) - set(entry.options))
        if unknown:
            allowed = ", ".join(f"{k} ({o.help})" for k, o in entry.options.items()) or "none"
            raise MuseQuantError(
                f"precision {name}: unknown option(s) {', '.join(unknown)}; its options: {allowed}"
            )
        resolved = {}
        for key, opt in entry.options.items():
            try:
                resolved[key] = opt.parse(options.get(key, opt.default))
            except (TypeError, ValueError) as e:
                raise MuseQuantError(
                    f"precision {name}: option {key}={options[key]}: {e}"
                ) from None
        if emulated and entry.not_emulable:
            raise MuseQuantError(
                f"precision {name}: emulated=true cannot reproduce it ({entry.not_emulable}); "
                "run it with emulated=false"
            )
        emulated = bool(emulated and entry.family.dequantize is not None)
        if emulated and resolved.get("compute_dtype", "float32") != "float32":
            raise MuseQuantError(
                f"precision {name}: emulated=true runs dense float32 layers; "
                f"compute_dtype={resolved['compute_dtype']} applies to the real kernels only"
            )
        params = {k: int(v) for k, v in match.groupdict().items()}
        calibration = calibration if entry.family.calibrated else None
        precision = Precision(name, entry.family, params, resolved, emulated, calibration)
        return precision, entry.build
    raise MuseQuantError(
        f"unknown precision {name!r}; known: {', '.join(known_precisions())} "
        "(bits and group size are read from gptq-/rtn- names, e.g. gptq-w4g128, rtn-w8g64)"
    )


def build_precision(source: Source, precision: Precision, build: Build) -> Built:
    """Run the precision's function, then, in emulated mode, dequantize once into dense layers."""
    model, record = build(source, precision)
    if precision.emulated:
        record = {**record, "emulated_modules": emulate(model, precision.family)}
    return model, record


# --------------------------------------------------------------------------- option parsers


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ValueError("expected true or false")


_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
}


def parse_dtype(value: Any) -> str:
    """A floating dtype's torch name (``bf16`` -> ``bfloat16``)."""
    text = str(value).removeprefix("torch.").strip().lower()
    if text not in _DTYPES:
        raise ValueError(f"expected one of {', '.join(sorted(set(_DTYPES.values())))}")
    return _DTYPES[text]


def _positive_int(value: Any) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError("expected a positive integer")
    return number


COMPUTE_DTYPE = Option("float32", parse_dtype, "dtype of activations and matmuls")

# --------------------------------------------------------------------------- emulated mode


def emulate(model: nn.Module, family: Family) -> int:
    """Replace every module ``family`` quantized by a dense float32 ``nn.Linear`` holding the
    library's own dequantization of its weight; return how many were replaced."""
    assert family.dequantize is not None
    replaced = 0
    for name, module in list(model.named_modules()):
        weight = family.dequantize(module)
        if weight is None:
            continue
        bias = getattr(module, "bias", None)
        dense = nn.Linear(
            weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device
        )
        dense.weight = nn.Parameter(weight.detach().float(), requires_grad=False)
        if bias is not None:
            dense.bias = nn.Parameter(bias.detach().float(), requires_grad=False)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, dense)
        replaced += 1
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:  # what transformers' own dequantize() does afterwards
        quantizer.remove_quantization_config(model)
    return replaced


def quantized_linear_names(model: nn.Module) -> list[str]:
    """The linears a weight-only quantizer targets: all but the output head."""
    head = model.get_output_embeddings()
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and m is not head]


def check_group_size(model: nn.Module, precision: Precision) -> None:
    """Refuse a group size that does not divide a quantized layer's input width."""
    group = precision.params["group_size"]
    for name in quantized_linear_names(model):
        width = model.get_submodule(name).in_features
        if width % group:
            raise MuseQuantError(
                f"{precision.name}: group size {group} does not divide the input width {width} "
                f"of {name}; choose a group size that divides it"
            )


# --------------------------------------------------------------------------- full precision


FULL = Family("torch")


def load_fp32(source: Source, precision: Precision) -> Built:
    return source.load(dtype=torch.float32), {"dtype": "float32"}


def load_bf16(source: Source, precision: Precision) -> Built:
    return source.load(dtype=torch.bfloat16), {"dtype": "bfloat16"}


def load_fp16(source: Source, precision: Precision) -> Built:
    return source.load(dtype=torch.float16), {"dtype": "float16"}


# --------------------------------------------------------------------------- bitsandbytes


class _DropInt8CastWarning(logging.Filter):
    """bitsandbytes' LLM.int8 logs one warning per matmul on CPU that it casts inputs to fp16."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("MatMul8bitLt: inputs will be cast")


logging.getLogger("bitsandbytes.autograd._functions").addFilter(_DropInt8CastWarning())


def _bnb_dequantize(module: nn.Module) -> torch.Tensor | None:
    import bitsandbytes as bnb

    if isinstance(module, bnb.nn.Linear4bit):
        return bnb.functional.dequantize_4bit(module.weight.data, module.weight.quant_state)
    return None


BITSANDBYTES = Family("bitsandbytes", _bnb_dequantize)
BNB4_OPTIONS = {
    "double_quant": Option(False, parse_bool, "quantize the absmax scales too (QLoRA's trick)"),
    "compute_dtype": COMPUTE_DTYPE,
}
INT8_OPTIONS = {
    "threshold": Option(6.0, float, "LLM.int8 outlier threshold; 0 disables the fp16 outliers"),
}


def _bitsandbytes(source: Source, config: Any) -> Built:
    model = source.load(dtype=torch.float32, quantization_config=config)
    return model, {"quantization_config": model.config.quantization_config.to_dict()}


def quantize_int8(source: Source, precision: Precision) -> Built:
    """LLM.int8 (bitsandbytes): int8 row-wise weights, activations quantized per matmul."""
    from transformers import BitsAndBytesConfig

    threshold = precision.options["threshold"]
    return _bitsandbytes(
        source, BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=threshold)
    )


def _bnb_4bit(source: Source, precision: Precision, quant_type: str) -> Built:
    from transformers import BitsAndBytesConfig

    compute = precision.compute_dtype
    config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant_type,
        bnb_4bit_use_double_quant=precision.options["double_quant"],
        bnb_4bit_compute_dtype=compute,
    )
    model, record = _bitsandbytes(source, config)
    # On CPUs with AVX512-BF16, bitsandbytes runs 4-bit matmuls in a fused kernel that casts
    # activations and scales to bf16 whatever compute_dtype says; keep that kernel only when
    # bf16 is what was asked, else its default kernel (dequantize, matmul in compute_dtype).
    fused = [m for m in model.modules() if getattr(m, "support_avx512bf16_for_cpu", False)]
    if fused and compute != torch.bfloat16:
        for module in fused:
            module.support_avx512bf16_for_cpu = False
    if torch.device(source.device).type == "cpu":
        fused_kept = bool(fused) and compute == torch.bfloat16
        record["cpu_kernel"] = "fused AVX512-BF16" if fused_kept else f"default ({compute})"
    return model, record


def quantize_nf4(source: Source, precision: Precision) -> Built:
    """NormalFloat-4 (bitsandbytes, QLoRA): 16 levels at normal quantiles, absmax per 64."""
    return _bnb_4bit(source, precision, "nf4")


def quantize_fp4(source: Source, precision: Precision) -> Built:
    """FP4 (bitsandbytes' 4-bit float, the ICLR'25 code's "4-bit"), absmax per 64."""
    return _bnb_4bit(source, precision, "fp4")


# --------------------------------------------------------------------------- GPTQ (gptqmodel)

GPTQ_INSTALL = (
    "pip install 'muse-quant[gptq]' (gptqmodel 7.6.x, the last release for torch < 2.14, "
    "plus optimum, which peft requires once gptqmodel is installed)"
)
#: gptqmodel kernels that only run on CUDA; ``torch`` runs anywhere.
GPTQ_CUDA_BACKENDS = ("marlin", "exllama_v2", "machete", "triton", "bitblas")
GPTQ_BACKENDS = ("torch", "auto", *GPTQ_CUDA_BACKENDS)


def _gptq_dequantize(module: nn.Module) -> torch.Tensor | None:
    from gptqmodel.nn_modules.qlinear import BaseQuantLinear

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
    "calibration_size": Option(256, _positive_int, "at most this many calibration texts"),
    "compute_dtype": COMPUTE_DTYPE,
    "backend": Option("torch", _parse_backend, "gptqmodel kernel"),
}


def import_gptqmodel() -> Any:
    """gptqmodel, or a one-line error saying how to install it."""
    # Its CPU quantizer stalls with one worker (its default on 2 cores).
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(max(2, ((os.cpu_count() or 1) + 1) // 2)))
    try:
        import gptqmodel
    except ImportError as e:
        raise MuseQuantError(f"GPTQ precisions need gptqmodel ({e}); {GPTQ_INSTALL}") from None
    return gptqmodel


def cache_root() -> Path:
    """``$MUSE_QUANT_CACHE`` if set, else ``~/.cache/muse-quant``."""
    from harness_ext.toyworld.build import default_cache_root

    return default_cache_root()


def cached_checkpoint(key: dict[str, Any], write: Callable[[Path], None]) -> tuple[Path, bool]:
    """The folder cached under ``key`` (written by ``write`` on a miss) and whether it was a hit.

    A miss writes into a temporary sibling that is renamed into place, so an interrupted write
    never leaves a half checkpoint behind; two writers racing keep the first complete one.
    """
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    root = cache_root() / "quantized"
    folder = root / digest
    if (folder / "muse_quant_key.json").is_file():
        return folder, True
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{digest}.writing-"))
    try:
        write(tmp)
        (tmp / "muse_quant_key.json").write_text(json.dumps(key, indent=1, sort_keys=True))
        try:
            os.replace(tmp, folder)
        except OSError:  # another process won the race
            if not (folder / "muse_quant_key.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
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
        from gptqmodel.looper import loop_processor

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


# --------------------------------------------------------------------------- RTN (torchao)


def _torchao_dequantize(module: nn.Module) -> torch.Tensor | None:
    from torchao.utils import TorchAOBaseTensor

    weight = getattr(module, "weight", None)
    return weight.dequantize() if isinstance(weight, TorchAOBaseTensor) else None


RTN = Family("torchao", _torchao_dequantize)
RTN_OPTIONS = {
    "sym": Option(True, parse_bool, "symmetric grid (scale = absmax / (2^bits - 1) * 2, zero 0)"),
}


def quantize_rtn(source: Source, precision: Precision) -> Built:
    """Round-to-nearest weight-only quantization per group (torchao ``IntxWeightOnlyConfig``)."""
    from torchao.quantization import IntxWeightOnlyConfig, MappingType, quantize_
    from torchao.quantization.granularity import PerGroup

    bits, group = precision.params["bits"], precision.params["group_size"]
    if not 1 <= bits <= 8:
        raise MuseQuantError(f"{precision.name}: torchao quantizes 1 to 8 bits, not {bits}")
    model = source.load(dtype=torch.float32)
    check_group_size(model, precision)
    mapping = MappingType.SYMMETRIC if precision.options["sym"] else MappingType.ASYMMETRIC
    config = IntxWeightOnlyConfig(
        weight_dtype=getattr(torch, f"int{bits}"), granularity=PerGroup(group), mapping_type=mapping
    )
    targets = set(quantized_linear_names(model))
    quantize_(model, config, filter_fn=lambda _module, fqn: fqn in targets)
    return model, {
        "config": {
            "class": type(config).__name__,
            "weight_dtype": f"int{bits}",
            "granularity": f"PerGroup({group})",
            "mapping_type": mapping.name,
            "packing_format": str(config.intx_packing_format.value),
            "version": config.version,
        }
    }


# --------------------------------------------------------------------------- the registry

register("fp32", load_fp32, FULL)
register("bf16", load_bf16, FULL)
register("fp16", load_fp16, FULL)
register(
    "int8",
    quantize_int8,
    BITSANDBYTES,
    INT8_OPTIONS,
    not_emulable="LLM.int8 also quantizes the activations of every matmul, which dense weights "
    "do not; on the toy world KnowMem moved by 5 points",
)
register("nf4", quantize_nf4, BITSANDBYTES, BNB4_OPTIONS)
register("fp4", quantize_fp4, BITSANDBYTES, BNB4_OPTIONS)
register(
    r"gptq-w(?P<bits>\d+)g(?P<group_size>\d+)",
    quantize_gptq,
    GPTQ,
    GPTQ_OPTIONS,
    "gptq-w{bits}g{group}",
)
register(
    r"rtn-w(?P<bits>\d+)g(?P<group_size>\d+)", quantize_rtn, RTN, RTN_OPTIONS, "rtn-w{bits}g{group}"
)
