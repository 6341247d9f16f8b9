"""The torch runtime of the ``muse`` model: lm-eval's HF model plus the per-token path MUSE's
PrivLeak needs.

Built from a :class:`~model_wrappers.request.ModelRequest` (``model_wrappers.muse_model`` reads
the arguments and picks the runtime). Everything lm-eval's ``hf`` model does works unchanged
(generation, log-likelihoods, batching, ``peft=``); on top of it:

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
- The model is the request's checkpoint at its precision (:func:`model_wrappers.loading.
  load_model`); its provenance (precision and library config, versions, file hashes, merge
  procedure, calibration hash, device) lands in the results file under
  ``config.muse_provenance``. With lm-eval's own loading arguments (``peft=``, ``gguf_file=``,
  ...) lm-eval's loader runs instead.
- Data parallelism: launched as several processes (``torchrun`` or ``accelerate launch``), each
  process loads the model on its own device and scores its share of the documents; lm-eval
  gathers the per-document scores on rank 0, so PrivLeak's AUC is computed over every text, as
  in one process (docs/tasks.md).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM
from tqdm.auto import tqdm

from harness_ext.token_requests import ScoredText, describe, wants_token_stats
from model_wrappers.loading import load_model
from model_wrappers.muse_requests import MuseRequests, Scratch, row_stats
from model_wrappers.prefix_cache import (
    MIN_SHARED_TOKENS,
    PrefixCache,
    move_padding_after,
    shared_prefix_length,
)
from model_wrappers.request import ModelRequest
from model_wrappers.row_prefill import prefilled_rows

log = logging.getLogger(__name__)


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


#: Model types whose logits are exactly the output head applied to the last hidden state (no
#: soft-capping or logit scale), scored with one row's logits at a time (``_row_logits``).
ROW_HEAD_MODELS = ("llama", "mistral", "qwen2")


def _plain_head(head: Any) -> bool:
    """Whether ``head(x)`` is exactly ``x @ head.weight.T``: a bias-free ``nn.Linear`` with no
    hooks and its own ``forward`` (accelerate's offloading replaces it; peft replaces the type)."""
    hooked = head._forward_hooks or head._forward_pre_hooks or "forward" in vars(head)
    return type(head) is torch.nn.Linear and head.bias is None and not hooked


class MuseLM(MuseRequests, HFLM):
    """lm-eval's HFLM with float32 per-token statistics for PrivLeak and a strict context policy."""

    def __init__(self, request: ModelRequest) -> None:
        provenance = None
        if request.precision is None:  # lm-eval's own loader
            super().__init__(request.pretrained, **request.lm_args)
        else:
            model, provenance = load_model(request)
            with _quiet_model_object():
                tokenizer = request.opened.weights.tokenizer_name
                super().__init__(model, **{"tokenizer": tokenizer, **request.lm_args})
            if request.accelerator is not None:
                self.accelerator = accelerator = request.accelerator
                self._rank, self._world_size = accelerator.process_index, accelerator.num_processes
        self.adopt(request, provenance)
        self.max_batch_tokens = request.max_batch_tokens
        #: The shared prompt prefix of generation batches (KnowMem's in-context pairs), computed
        #: once; None when ``prefix_cache=false``.
        self.prefix_cache = PrefixCache() if request.prefix_cache else None

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
        """lm-eval's generation, with a prefix every row shares computed once, else with each
        padded row prefilled alone (both with ``prefix_cache``)."""
        mask = kwargs.get("attention_mask")
        if self.prefix_cache is None or mask is None or self.backend != "causal":
            return super()._model_generate(context, max_length, stop, **kwargs)
        shared = shared_prefix_length(context, mask)
        if shared < MIN_SHARED_TOKENS:
            rows = prefilled_rows(self.model, context, mask) if not bool(mask.all()) else None
            if rows is not None:
                kwargs["past_key_values"] = rows
            return super()._model_generate(context, max_length, stop, **kwargs)
        context, kwargs["attention_mask"] = move_padding_after(context, mask, shared)
        cache = self.prefix_cache.for_batch(self.model, context[0, :shared], len(context))
        return super()._model_generate(context, max_length, stop, past_key_values=cache, **kwargs)

    # ------------------------------------------------------------------ the per-token path

    def _row_logits(self, batch: torch.Tensor, scratch: Scratch) -> Any:
        """``logits(row, n)``: the first ``n`` positions' logits of one row of ``batch``.

        A batch's logits (rows x width x vocabulary, float32) are what held the memory: 1.6 GB
        for 8,192 tokens of SmolLM2's 49,152-token vocabulary. Where the logits are the output
        head applied to the last hidden state (:data:`ROW_HEAD_MODELS`), the transformer runs
        batched and the head one row at a time, so only one row's logits exist at once: the
        same numbers, a batch-1 evaluator's memory. No KV cache: scoring never decodes after.
        A plain bias-free head writes into ``scratch``'s buffer (``torch.mm`` is the product
        ``nn.Linear`` computes, into reused memory rather than fresh).
        """
        if self.model.config.model_type not in ROW_HEAD_MODELS:
            logits = self.model(batch, use_cache=False).logits
            return lambda row, n: logits[row, :n]
        # The decoder alone (the model without its head) returns only the last hidden state.
        hidden = self.model.get_decoder()(batch, use_cache=False).last_hidden_state
        head = self.model.get_output_embeddings()
        if not _plain_head(head):
            return lambda row, n: head(hidden[row, :n])
        weight = head.weight.t()

        def logits(row: int, n: int) -> torch.Tensor:
            rows = hidden[row, :n]
            return torch.mm(rows, weight, out=scratch.get("logits", (n, weight.shape[1]), rows))

        return logits

    def _score_sequences(
        self, jobs: list[tuple[list[int], bool]], disable_tqdm: bool
    ) -> list[tuple[Any, Any, Any]]:
        """(log-probs, mu, sigma) per job, as float32 numpy arrays (mu/sigma None if not asked).

        Longest first, so each batch pads little and a memory error shows up at once. A batch
        holds at most ``max_batch_tokens`` padded tokens (at least one text); its logits are
        computed one row at a time where the model allows (``_row_logits``).
        """
        order = sorted(range(len(jobs)), key=lambda j: -len(jobs[j][0]))
        auto = self.batch_size == "auto"
        batch_size = max(1, self._detect_batch_size() if auto else int(self.batch_size))
        pad = self.tokenizer.pad_token_id
        out: list[Any] = [None] * len(jobs)
        bar = tqdm(total=len(jobs), disable=disable_tqdm or self.rank != 0, desc="MUSE token stats")
        scratch = Scratch()
        start = 0
        while start < len(order):
            width = len(jobs[order[start]][0])
            rows = max(1, min(batch_size, self.max_batch_tokens // width))
            chunk = order[start : start + rows]
            start += len(chunk)
            batch = torch.full((len(chunk), width), pad, dtype=torch.long)
            for row, j in enumerate(chunk):
                batch[row, : len(jobs[j][0])] = torch.tensor(jobs[j][0])
            with torch.no_grad():
                rows_logits = self._row_logits(batch.to(self.device), scratch)
                for row, j in enumerate(chunk):
                    ids, moments = jobs[j]
                    n = len(ids)
                    logits = rows_logits(row, n - 1)
                    out[j] = row_stats(logits, batch[row, 1:n], moments, scratch)
            bar.update(len(chunk))
        bar.close()
        return out
