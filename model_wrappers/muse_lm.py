"""The ``muse`` lm-eval model: lm-eval's HF model plus the per-token path MUSE's PrivLeak needs.

Everything lm-eval's ``hf`` model does works unchanged (generation, log-likelihoods, batching,
``peft=``); on top of it:

- PrivLeak documents (``harness_ext.token_requests``) get token statistics instead of a bare sum:
  one forward pass per text gives every token's log-prob and the mean/std of the log-probs over
  the vocabulary at each position (Min-K%++); a second pass over ``text.lower()`` gives the
  lowercase attack its log-probs. Texts are batched (sorted by length, right-padded: in a causal
  model padding after a text cannot change its tokens' logits), and every statistic is computed
  in float32 whatever the model's dtype.
- Context length (MUSE never truncates): a PrivLeak text (with BOS) longer than the model's
  context, or a generation prompt that leaves no room for its new tokens, is an error by default.
  ``context_overflow=truncate`` instead scores a PrivLeak text's first ``max_length`` tokens and
  lets lm-eval left-truncate generation prompts.
- Loading goes through :func:`model_wrappers.loading.load_causal_lm`: ``adapter=`` (peft; refused
  on a base other than the one it records, unless ``allow_other_base=true``),
  ``merge=true|false``, ``precision=`` (fp32, bf16, fp16, int8, nf4, fp4, gptq-w{b}g{g},
  rtn-w{b}g{g}) and its options, ``emulated=``, ``allow_pickle=``, ``calibration=``
  (docs/precisions.md); from Python, ``precision=`` may be a resolved
  :class:`~model_wrappers.precisions.Precision` (a sweep resolves each cell's once).
  ``dtype`` picks the full precision when no ``precision`` is given; the default on CPU is
  float32 (``auto`` would keep a checkpoint's fp16/bf16). The loader's
  provenance (precision and library config, versions, file hashes, merge procedure, calibration
  hash, device) lands in the results file under ``config.muse_provenance``. lm-eval's own loading
  arguments (``peft=``, ``delta=``, ``gguf_file=``, ``revision=``, ...) keep lm-eval's loader.
- ``precision=gguf-*`` (emulated=false) runs on llama.cpp's kernels: ``create_from_arg_obj`` and
  ``create_from_arg_string`` (how lm-eval and the sweep build the model) return the llama.cpp
  model (``model_wrappers.llamacpp_lm``) instead, which answers the same requests alike.
- Data parallelism: launched as several processes (``torchrun`` or ``accelerate launch``), each
  process loads the model on its own device and scores its share of the documents; lm-eval
  gathers the per-document scores on rank 0, so PrivLeak's AUC is computed over every text, as
  in one process (docs/tasks.md).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from lm_eval.api.instance import Instance
from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM
from lm_eval.utils import simple_parse_args_string
from tqdm.auto import tqdm

from harness_ext.errors import MuseQuantError, did_you_mean
from harness_ext.precision_names import DTYPE_PRECISIONS
from harness_ext.token_requests import ScoredText, describe, wants_token_stats
from model_wrappers.llamacpp_lm import LlamaCppLM
from model_wrappers.loading import load_causal_lm
from model_wrappers.muse_requests import CONTEXT_POLICIES, MuseRequests, flag, row_stats
from model_wrappers.precisions import Precision, all_precision_options, resolve_precision
from model_wrappers.prefix_cache import (
    MIN_SHARED_TOKENS,
    PrefixCache,
    move_padding_after,
    shared_prefix_length,
)

log = logging.getLogger(__name__)

#: The muse model's true/false arguments, in the order ``__init__`` reads them.
FLAGS = ("merge", "emulated", "allow_pickle", "allow_other_base", "prefix_cache")
#: PrivLeak's scoring batches hold at most this many padded tokens: with a 32k vocabulary the
#: batch's logits are 8192 x 32000 x 4 bytes = 1 GB in float32 (0.5 GB in bf16), whatever the
#: batch size or text length.
MAX_BATCH_TOKENS = 8192

#: lm-eval's own loading arguments: with any of them, lm-eval's loader runs instead of ours.
LM_EVAL_LOADING = (
    "peft", "delta", "gguf_file", "autogptq", "gptqmodel", "parallelize", "tp_plan",
    "revision", "subfolder", "quantization_config", "load_in_4bit", "load_in_8bit",
)


class _QuietModelObject(logging.Filter):
    """HFLM warns whenever ``pretrained`` is a model object; ours always is, on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not message.startswith(("`pretrained` model kwarg", "Passed an already-init"))


@contextlib.contextmanager
def _quiet_model_object() -> Iterator[None]:
    logger, quiet = logging.getLogger(HFLM.__module__), _QuietModelObject()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def _full_precision(dtype: str | torch.dtype, on_cpu: bool) -> str:
    """The precision a ``dtype`` asks for: ``auto`` is float32 on CPU (the exact reference the
    quantized rows are compared with) and bf16 on GPU."""
    name = str(dtype).removeprefix("torch.")
    if name == "auto":
        return "fp32" if on_cpu else "bf16"
    if name not in DTYPE_PRECISIONS:
        raise MuseQuantError(f"dtype={dtype}: use float32, bfloat16, float16 or auto")
    return DTYPE_PRECISIONS[name]


def _local_path(path: Any) -> Any:
    """An existing local folder as an absolute path, so nothing mistakes it for a hub repo id."""
    if isinstance(path, str) and Path(path).expanduser().is_dir():
        return str(Path(path).expanduser().resolve())
    return path


def _data_parallel(on_cpu: bool) -> Any:
    """The Accelerator of this process when launched as several (``torchrun``, ``accelerate
    launch``), else None. HFLM sets none up for a model object, nor on CPU: on CPU accelerate's
    gloo process group needs ``cpu=True``, given before anything else creates accelerate's state."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=on_cpu)
    return accelerator if accelerator.num_processes > 1 else None


def check_arguments(kwargs: Mapping[str, Any]) -> None:
    """Refuse a model argument nobody reads, before anything loads: HFLM passes unknown ones to
    ``from_pretrained`` or drops them, so ``precison=nf4`` would evaluate fp32 without a word."""
    known = _known_arguments()
    for name in FLAGS:
        if name in kwargs:
            flag(name, kwargs[name])
    unknown = sorted(k for k in kwargs if k not in known)
    if unknown:
        raise MuseQuantError(
            f"--model_args: unknown argument {unknown[0]}{did_you_mean(unknown[0], known)}; "
            "the muse model takes lm-eval's hf arguments, adapter, merge, allow_other_base, "
            "precision and its options, emulated, allow_pickle, calibration, context_overflow, "
            "max_batch_tokens, prefix_cache (docs/precisions.md)"
        )


def _known_arguments() -> set[str]:
    """Every argument name the muse model reads: its own, lm-eval's HFLM's, the precisions'."""
    names = {*inspect.signature(MuseLM.__init__).parameters}
    names |= {*inspect.signature(HFLM.__init__).parameters}
    names -= {"self", "kwargs"}
    return names | all_precision_options() | set(LM_EVAL_LOADING)


@register_model("muse")
class MuseLM(MuseRequests, HFLM):
    """lm-eval's HFLM with float32 per-token statistics for PrivLeak and a strict context policy."""

    def __init__(
        self,
        pretrained: Any,
        dtype: str | torch.dtype | None = None,
        context_overflow: str = "error",
        adapter: str | None = None,
        merge: bool = True,
        precision: str | Precision | None = None,
        emulated: bool = False,
        allow_pickle: bool = False,
        calibration: str | None = None,
        allow_other_base: bool = False,
        max_batch_tokens: int | str = MAX_BATCH_TOKENS,
        prefix_cache: bool = True,
        **kwargs: Any,
    ) -> None:
        check_arguments(kwargs)
        flags = (merge, emulated, allow_pickle, allow_other_base, prefix_cache)
        given = dict(zip(FLAGS, flags, strict=True))
        merge, emulated, allow_pickle, allow_other_base, prefix_cache = (
            flag(name, value) for name, value in given.items()
        )
        if context_overflow not in CONTEXT_POLICIES:
            raise MuseQuantError(
                f"context_overflow={context_overflow}: choose one of {', '.join(CONTEXT_POLICIES)}"
            )
        try:
            self.max_batch_tokens = int(max_batch_tokens)
        except ValueError:
            self.max_batch_tokens = 0
        if self.max_batch_tokens < 1:
            raise MuseQuantError(
                f"max_batch_tokens={max_batch_tokens}: a positive number of tokens "
                f"(default {MAX_BATCH_TOKENS})"
            )
        device = str(kwargs.get("device") or "cpu")
        on_cpu = device.startswith("cpu") or not torch.cuda.is_available()
        explicit_dtype = dtype is not None
        if dtype is None:
            dtype = "float32" if on_cpu else "auto"
        for key in ("tokenizer", "peft"):
            if key in kwargs:
                kwargs[key] = _local_path(kwargs[key])
        pretrained = _local_path(pretrained)
        #: What ``load_causal_lm`` recorded (None when lm-eval's loader ran).
        self.provenance: dict[str, Any] | None = None
        native = sorted(k for k in LM_EVAL_LOADING if k in kwargs)
        ours = adapter is not None or precision is not None or emulated or calibration
        if native and ours:
            raise MuseQuantError(
                f"{native[0]}= uses lm-eval's loader, which adapter=/precision=/emulated=/"
                "calibration= do not go through; use one or the other"
            )
        accelerator = None
        if isinstance(pretrained, str) and not native:
            accelerator = _data_parallel(on_cpu)
            if accelerator is not None:  # each process on its own device
                device = kwargs["device"] = str(accelerator.device)
            if precision is None:
                precision = _full_precision(dtype, on_cpu)
            elif explicit_dtype:
                raise MuseQuantError(f"dtype={dtype} and precision={precision}: pass one")
            options = {k: kwargs.pop(k) for k in all_precision_options() if k in kwargs}
            model, self.provenance = load_causal_lm(
                pretrained,
                adapter=adapter,
                merge=merge,
                precision=precision,
                emulated=emulated,
                allow_pickle=allow_pickle,
                trust_remote_code=bool(kwargs.get("trust_remote_code", False)),
                calibration=calibration,
                device=device,
                allow_other_base=allow_other_base,
                **options,
            )
            kwargs.setdefault("tokenizer", pretrained)
            with _quiet_model_object():
                super().__init__(model, **kwargs)
            if accelerator is not None:
                self.accelerator = accelerator
                self._rank, self._world_size = accelerator.process_index, accelerator.num_processes
        else:
            super().__init__(pretrained, dtype=dtype, **kwargs)
        self.context_overflow = context_overflow
        #: The shared prompt prefix of generation batches (KnowMem's in-context pairs), computed
        #: once; None when ``prefix_cache=false``.
        self.prefix_cache = PrefixCache() if prefix_cache else None
        #: Per task, the tokens cut from each truncated document (by its label) since the last
        #: report; with several processes, rank 0 holds every process's after each request type.
        self.truncated: dict[str | None, dict[str, int]] = {}

    @classmethod
    def create_from_arg_obj(
        cls, arg_dict: dict[str, Any], additional_config: dict[str, Any] | None = None
    ) -> Any:
        """The muse model, or, for a gguf precision on its real kernels, the llama.cpp model
        (``model_wrappers.llamacpp_lm``): lm-eval and the sweep build models through here."""
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None}
        args = {**arg_dict, **extra}
        precision = args.get("precision")
        if isinstance(precision, str):
            emulated = flag("emulated", args.get("emulated", False))
            precision = resolve_precision(precision, emulated=emulated)
        if isinstance(precision, Precision) and precision.runtime == "llama.cpp":
            return LlamaCppLM(**args)
        return cls(**args)

    @classmethod
    def create_from_arg_string(
        cls, arg_string: str, additional_config: dict[str, Any] | None = None
    ) -> Any:
        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    def get_model_info(self) -> dict[str, Any]:
        """lm-eval's model info (it goes into the results file's ``config``) plus provenance and
        the truncation report; lm-eval asks once per evaluation, after it, so the counts are
        reported (on the console too) and start again."""
        info = super().get_model_info()
        if self.provenance is not None:
            info["muse_provenance"] = self.provenance
        info["muse_truncation"] = self.truncation_report()
        return info

    # ------------------------------------------------------------------ lm-eval request types

    def loglikelihood_rolling(
        self, requests: list[Instance], disable_tqdm: bool = False
    ) -> list[float]:
        """Plain rolling log-likelihoods, except PrivLeak documents get :class:`ScoredText`."""
        wanted = [i for i, r in enumerate(requests) if wants_token_stats(r.doc)]
        if not wanted:
            return super().loglikelihood_rolling(requests, disable_tqdm)
        out: list[float] = [0.0] * len(requests)
        rest = sorted(set(range(len(requests))) - set(wanted))
        if rest:
            sums = super().loglikelihood_rolling([requests[i] for i in rest], disable_tqdm)
            for i, value in zip(rest, sums, strict=True):
                out[i] = value
        texts = [requests[i].args[0] for i in wanted]
        labels = [describe(r.task_name, r.doc_id, r.doc) for r in (requests[i] for i in wanted)]
        tasks = [requests[i].task_name for i in wanted]
        stats = self.token_stats(texts, labels, disable_tqdm, tasks)
        self._gather_truncation()
        for i, scored in zip(wanted, stats, strict=True):
            out[i] = ScoredText(scored)
        return out

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        """lm-eval's batched greedy generation, after the context-length check: every prompt
        that leaves no room for its new tokens is counted (the error names how many, and the
        longest; ``truncate`` records how much lm-eval cut from each). With the prefix cache,
        each task's prompts are batched apart, so that a batch shares its task's prefix."""
        self.check_generation_room(requests)
        by_task: dict[str | None, list[int]] = {}
        for i, req in enumerate(requests):
            by_task.setdefault(req.task_name, []).append(i)
        self._gather_truncation()
        if self.prefix_cache is None or len(by_task) == 1:
            return super().generate_until(requests, disable_tqdm)
        # One task at a time, so that a batch's prompts share their task's in-context prefix.
        out: list[str] = [""] * len(requests)
        for indices in by_task.values():
            texts = super().generate_until([requests[i] for i in indices], disable_tqdm)
            for i, text in zip(indices, texts, strict=True):
                out[i] = text
        return out

    def _gather_truncation(self) -> None:
        """With several processes, move every process's truncation record to rank 0 (which alone
        writes the results file); a document lm-eval repeated to even out the ranks counts once.
        Called by every process at the same point of each request type."""
        if self.world_size <= 1:
            return
        parts = self.gather_object(self.truncated)
        self.truncated = {}
        for part in parts or ():
            for task, cuts in part.items():
                self.truncated.setdefault(task, {}).update(cuts)

    def _model_generate(
        self, context: torch.Tensor, max_length: int, stop: list[str], **kwargs: Any
    ) -> torch.Tensor:
        """lm-eval's generation, with a prefix every row shares computed once (prefix_cache)."""
        mask = kwargs.get("attention_mask")
        if self.prefix_cache is None or mask is None or self.backend != "causal":
            return super()._model_generate(context, max_length, stop, **kwargs)
        shared = shared_prefix_length(context, mask)
        if shared < MIN_SHARED_TOKENS:
            return super()._model_generate(context, max_length, stop, **kwargs)
        context, kwargs["attention_mask"] = move_padding_after(context, mask, shared)
        cache = self.prefix_cache.for_batch(self.model, context[0, :shared], len(context))
        return super()._model_generate(context, max_length, stop, past_key_values=cache, **kwargs)

    # ------------------------------------------------------------------ the per-token path

    def _score_sequences(
        self, jobs: list[tuple[list[int], bool]], disable_tqdm: bool
    ) -> list[tuple[Any, Any, Any]]:
        """(log-probs, mu, sigma) per job, as float32 numpy arrays (mu/sigma None if not asked).

        Longest first, so each batch pads little and a memory error shows up at once. A batch
        holds at most ``max_batch_tokens`` padded tokens (at least one text): the logits of a
        batch, ``rows x width x vocabulary``, are what sets this pass's peak memory.
        """
        order = sorted(range(len(jobs)), key=lambda j: -len(jobs[j][0]))
        auto = self.batch_size == "auto"
        batch_size = max(1, self._detect_batch_size() if auto else int(self.batch_size))
        pad = self.tokenizer.pad_token_id
        out: list[Any] = [None] * len(jobs)
        bar = tqdm(total=len(jobs), disable=disable_tqdm or self.rank != 0, desc="MUSE token stats")
        start = 0
        while start < len(order):
            width = len(jobs[order[start]][0])
            rows = max(1, min(batch_size, self.max_batch_tokens // width))
            chunk = order[start : start + rows]
            start += len(chunk)
            batch = torch.full((len(chunk), width), pad, dtype=torch.long)
            for row, j in enumerate(chunk):
                batch[row, : len(jobs[j][0])] = torch.tensor(jobs[j][0])
            with torch.no_grad():  # no KV cache: a scoring pass never decodes after it
                logits = self.model(batch.to(self.device), use_cache=False).logits
            for row, j in enumerate(chunk):
                ids, moments = jobs[j]
                n = len(ids)
                out[j] = row_stats(logits[row, : n - 1], batch[row, 1:n], moments)
            bar.update(len(chunk))
        bar.close()
        return out
