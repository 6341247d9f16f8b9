"""What MUSE asks of any model it evaluates, whatever runs it: the per-token path and the context
policy, shared by the torch runtime (``muse_lm.py``) and the llama.cpp runtime
(``llamacpp_lm.py``) so that both score a text, refuse or truncate it, and report it alike.

A model class mixes :class:`MuseRequests` in and gives ``tokenizer`` (the checkpoint's Hugging
Face tokenizer: every runtime sees the same token ids), ``max_length``, ``max_gen_toks``,
``tok_encode`` and ``_score_sequences`` (its forward passes), and calls :meth:`adopt`.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from lm_eval.api.instance import Instance
from lm_eval.models.utils import normalize_gen_kwargs

from harness_ext.errors import MuseQuantError
from harness_ext.metrics.mia import TokenStats
from harness_ext.token_requests import describe
from model_wrappers.request import ModelRequest

log = logging.getLogger(__name__)


class Scratch:
    """Vocabulary-wide buffers reused from one text to the next, by name.

    A text's positions x vocabulary in float32 is 300 MB at 2.4k tokens and a 32k vocabulary; a
    fresh tensor of that size is new memory each time, which the kernel pages in (zeroed) on
    first touch: on one CPU thread that made ``exp`` three times slower than writing into a
    reused buffer. The kernels and so the numbers are the same either way. Texts come longest
    first, so the first request of a name is its largest.
    """

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """A buffer of ``shape`` with ``like``'s dtype and device (its contents are garbage)."""
        size = math.prod(shape)
        buffer = self._buffers.get(name)
        if buffer is None or buffer.numel() < size or buffer.dtype != like.dtype:
            buffer = torch.empty(size, dtype=like.dtype, device=like.device)
            self._buffers[name] = buffer
        return buffer[:size].view(shape)


def row_stats(
    logits: torch.Tensor, targets: torch.Tensor, moments: bool, scratch: Scratch | None = None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """One text's token log-probs and, if asked, the vocabulary mean/std of log p (float32);
    the vocabulary-wide intermediates go into ``scratch``'s buffers where one is given."""
    logits = logits.float()
    if scratch is None:
        logp = F.log_softmax(logits, dim=-1)
    else:
        logp = torch.log_softmax(logits, dim=-1, out=scratch.get("logp", logits.shape, logits))
    token = logp.gather(-1, targets.to(logp.device)[:, None]).squeeze(-1)
    if not moments:
        return token.cpu().numpy(), None, None
    if scratch is None:
        weighted = logp.exp()
    else:
        weighted = torch.exp(logp, out=scratch.get("p", logp.shape, logp))
    weighted.mul_(logp)  # p * log p
    mu = weighted.sum(-1)
    second = weighted.mul_(logp).sum(-1)  # E[(log p)^2]
    sigma = (second - mu * mu).clamp_min_(0.0).sqrt_()
    return token.cpu().numpy(), mu.cpu().numpy(), sigma.cpu().numpy()


class MuseRequests:
    """MUSE's per-token statistics and context-length policy over a model's forward passes."""

    tokenizer: Any
    context_overflow: str
    #: Per task, the tokens cut from each truncated document (by its label) since the last
    #: report.
    truncated: dict[str | None, dict[str, int]]
    #: What the results file records of the model (None when lm-eval's own loader ran).
    provenance: dict[str, Any] | None

    def adopt(self, request: ModelRequest, provenance: dict[str, Any] | None) -> None:
        """What every runtime keeps of its request: the context policy, an empty truncation
        record and the provenance of the model it built."""
        self.context_overflow = request.context_overflow
        self.truncated = {}
        self.provenance = provenance

    def truncation_report(self) -> dict[str, Any]:
        """The results file's ``muse_truncation`` (also logged), then the counts start again:
        lm-eval asks for the model info once per evaluation, after it."""
        report = {
            "policy": self.context_overflow,
            "tasks": {
                str(task): {"documents": len(cuts), "max_tokens_cut": max(cuts.values())}
                for task, cuts in sorted(self.truncated.items(), key=lambda t: str(t[0]))
            },
        }
        for task, counts in report["tasks"].items():
            log.warning(
                "%s: %d document(s) truncated to the model's context (up to %d tokens cut)",
                task,
                counts["documents"],
                counts["max_tokens_cut"],
            )
        self.truncated = {}
        return report

    def check_generation_room(self, requests: list[Instance]) -> None:
        """Count every prompt that leaves no room for its new tokens: an error naming how many,
        and the longest; with ``truncate``, record how much is cut from each."""
        overflows = []
        for req in requests:
            context, gen_kwargs = req.args[0], req.args[1]
            new = normalize_gen_kwargs(gen_kwargs, self.max_gen_toks)["max_gen_toks"]
            n = len(self.tok_encode(context))
            if n + new > self.max_length:
                overflows.append((n + new - self.max_length, n, new, req))
        if overflows and self.context_overflow == "error":
            cut, n, new, req = max(overflows, key=lambda o: o[0])
            raise MuseQuantError(
                f"{len(overflows)} of {len(requests)} prompts leave no room to generate; the "
                f"longest, {describe(req.task_name, req.doc_id, req.doc)}: {n} tokens + {new} "
                f"new tokens exceed the model's context of {self.max_length}; MUSE does not "
                "truncate: "
                "use a longer-context model or pass --model_args context_overflow=truncate to "
                "keep the prompt's end"
            )
        for cut, _, _, req in overflows:
            label = describe(req.task_name, req.doc_id, req.doc)
            self.truncated.setdefault(req.task_name, {})[label] = cut

    def token_stats(
        self,
        texts: list[str],
        labels: list[str] | None = None,
        disable_tqdm: bool = False,
        tasks: list[str | None] | None = None,
    ) -> list[TokenStats]:
        """Token statistics of each text (with BOS) and of its lowercase, in batched passes.

        ``labels`` name the texts in error messages (default: their position); ``tasks`` name
        the task each text's truncation is counted under.
        """
        labels = labels or [f"text {i}" for i in range(len(texts))]
        tasks = tasks or [None] * len(texts)
        ids = [self.tokenizer(t, add_special_tokens=True)["input_ids"] for t in texts]
        lower = [self.tokenizer(t.lower(), add_special_tokens=True)["input_ids"] for t in texts]
        overflows = [(len(x), label) for x, label in zip(ids, labels, strict=True)]
        overflows = [(n, label) for n, label in overflows if n > self.max_length]
        if overflows and self.context_overflow == "error":
            n, label = max(overflows)
            raise MuseQuantError(
                f"{len(overflows)} of {len(texts)} texts are longer than the model's context of "
                f"{self.max_length} tokens; the longest, {label}: {n} tokens with BOS; MUSE "
                "does not truncate: shorten the texts, use a longer-context model, or pass "
                f"--model_args context_overflow=truncate to score each text's first "
                f"{self.max_length} tokens"
            )
        for x, task, label in zip(ids, tasks, labels, strict=True):
            if len(x) > self.max_length:
                self.truncated.setdefault(task, {})[label] = len(x) - self.max_length
        encoded = [self._scored(x, label) for x, label in zip(ids, labels, strict=True)]
        lowered = [
            self._scored(x, f"{label} (lowercased)") for x, label in zip(lower, labels, strict=True)
        ]
        # One job per sequence: (ids, whether Min-K%++ moments are needed).
        jobs = [(ids, True) for ids in encoded] + [(ids, False) for ids in lowered]
        results = self._score_sequences(jobs, disable_tqdm)
        n = len(texts)
        return [
            TokenStats(
                logprobs=results[i][0],
                mu=results[i][1],
                sigma=results[i][2],
                text=texts[i],
                lowercase_logprobs=results[n + i][0],
            )
            for i in range(n)
        ]

    def _scored(self, ids: list[int], label: str) -> list[int]:
        """Token ids as MUSE scores a text (special tokens included), cut to the context (the
        overflow policy was applied by the caller)."""
        ids = ids[: self.max_length]
        if len(ids) < 2:
            raise MuseQuantError(f"{label}: no token to score after BOS; remove the empty text")
        return ids
