"""The llama.cpp runtime of the ``muse`` model: a ``gguf-*`` precision on llama.cpp's kernels.

``--model muse --model_args pretrained=...,precision=gguf-q4_k_m`` builds this model instead of
the torch one (the gguf family's runtime is llama.cpp; ``model_wrappers.muse_model`` picks the
runtime), because llama.cpp's kernels are not torch modules. It answers the same requests the
same way (``muse_requests.MuseRequests``): the texts are tokenized by the checkpoint's Hugging
Face tokenizer, so every precision sees the same token ids, and llama.cpp only runs the forward
passes: greedy generation for VerbMem and KnowMem, and the logits of every position of a
PrivLeak text, whose log-softmax, token log-probs and vocabulary moments are computed in float32
exactly as for the torch runtime.

The KV cache is float32 by default (the precision's option ``cache_type=f32``) so that the f32
GGUF reproduces the fp32 HF model; ``cache_type=f16`` is llama.cpp's own default. One text at a
time (llama.cpp decodes one sequence per context); a prompt that starts with the previous
prompt's tokens (KnowMem's in-context examples) reuses their KV cache.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
import torch
from lm_eval.api.instance import Instance
from lm_eval.api.model import LM
from lm_eval.models.utils import (
    handle_stop_sequences,
    normalize_gen_kwargs,
    postprocess_generated_text,
)
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoTokenizer

from harness_ext.errors import MuseQuantError, did_you_mean
from harness_ext.token_requests import ScoredText, describe, wants_token_stats
from model_wrappers.muse_requests import MuseRequests, row_stats
from model_wrappers.precisions.gguf import CACHE_TYPES, gguf_file, import_gguf
from model_wrappers.request import ModelRequest

#: lm-eval's default number of new tokens, as for the hf model.
MAX_GEN_TOKS = 256
#: lm-eval's arguments this runtime reads.
ACCEPTED = ("max_length", "max_gen_toks", "device", "trust_remote_code")
#: lm-eval's batch sizes: nothing to do here, where llama.cpp scores one text at a time.
IGNORED = ("batch_size", "max_batch_size")


class LlamaCppLM(MuseRequests, LM):
    """lm-eval's model interface over a GGUF file on llama.cpp, with MUSE's per-token path."""

    def __init__(self, request: ModelRequest) -> None:
        super().__init__()
        spec, opened = request.precision, request.opened
        assert spec is not None and opened is not None and spec.runtime == "llama.cpp"
        unknown = sorted(set(request.lm_args) - {*ACCEPTED, *IGNORED})
        if unknown:
            raise MuseQuantError(
                f"--model_args: {unknown[0]}{did_you_mean(unknown[0], ACCEPTED)} does not apply "
                "to a gguf precision on llama.cpp; it takes pretrained, adapter, "
                "allow_other_base, allow_pickle, trust_remote_code, precision and its option "
                "cache_type, context_overflow, max_length, max_gen_toks"
            )
        if not request.merge:
            raise MuseQuantError(
                f"{spec.name}: llama.cpp runs the merged model's file; merge=false (an adapter "
                "unmerged on a quantized base) is for torch precisions"
            )
        if request.device != "cpu":
            raise MuseQuantError(
                f"device={request.device}: the llama.cpp model runs on cpu here (llama-cpp-python "
                "is built for the CPU by the gguf extra); use device=cpu or emulated=true"
            )
        _, llama_cpp = import_gguf()
        path, record = gguf_file(opened.source, spec)  # refuses a non-Llama checkpoint
        config = AutoConfig.from_pretrained(str(opened.weights.folder))
        self.tokenizer = AutoTokenizer.from_pretrained(str(opened.weights.folder))
        self._max_length = int(request.lm_args.get("max_length") or config.max_position_embeddings)
        self.max_gen_toks = int(request.lm_args.get("max_gen_toks") or MAX_GEN_TOKS)
        self._device = request.device
        threads = torch.get_num_threads()
        self.llama = llama_cpp.Llama(
            str(path),
            n_ctx=self._max_length,
            n_batch=self._max_length,
            n_ubatch=self._max_length,
            n_threads=threads,
            n_threads_batch=threads,
            n_gpu_layers=0,
            logits_all=True,
            flash_attn=False,
            type_k=CACHE_TYPES[spec.options["cache_type"]],
            type_v=CACHE_TYPES[spec.options["cache_type"]],
            verbose=False,
        )
        # Freed with this model, or at exit before the interpreter clears the modules that
        # llama-cpp-python's own destructor needs (it fails on them then).
        weakref.finalize(self, self.llama.close)
        record = {**record, "threads": threads}
        self.adopt(request, request.provenance(record, weight_bytes=record["tensor_bytes"]))
        #: The tokens whose KV cache (and logits) the context holds.
        self._held: list[int] = []

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def prefix_token_id(self) -> int:
        """The token a rolling log-likelihood is scored after (lm-eval's HF model's rule)."""
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.tokenizer.eos_token_id

    def tok_encode(self, string: str) -> list[int]:
        """A prompt's ids as the hf model encodes it (special tokens unless it starts with BOS)."""
        bos = self.tokenizer.bos_token
        add = not (bos and string.startswith(bos))
        return self.tokenizer(string, add_special_tokens=add)["input_ids"]

    def get_model_info(self) -> dict[str, Any]:
        """What the results file's ``config`` records: provenance and the truncation report."""
        return {
            "model_dtype": self.provenance["precision"]["library_config"]["gguf_type"],
            "muse_provenance": self.provenance,
            "muse_truncation": self.truncation_report(),
        }

    # ------------------------------------------------------------------ forward passes

    def _logits(self, ids: list[int]) -> np.ndarray:
        """float32 logits of every position of ``ids``, reusing the KV cache of a shared prefix."""
        shared = 0
        for a, b in zip(self._held, ids[:-1], strict=False):
            if a != b:
                break
            shared += 1
        self.llama.n_tokens = shared
        self.llama.eval(ids[shared:])
        self._held = list(ids)
        return self.llama.scores[: len(ids)]

    def _score_sequences(
        self, jobs: list[tuple[list[int], bool]], disable_tqdm: bool
    ) -> list[tuple[Any, Any, Any]]:
        """(log-probs, mu, sigma) per job, one text at a time (see ``MuseRequests``)."""
        out = []
        for ids, moments in tqdm(jobs, disable=disable_tqdm, desc="MUSE token stats (llama.cpp)"):
            logits = torch.from_numpy(self._logits(ids)[: len(ids) - 1].copy())
            out.append(row_stats(logits, torch.tensor(ids[1:]), moments))
        return out

    def _greedy(self, ids: list[int], max_new: int, stop: list[str]) -> str:
        """Greedy continuation of ``ids``: up to ``max_new`` tokens, ending at EOS or once the
        text holds a stop sequence (then cut there, as lm-eval's hf model does)."""
        eos = self.tokenizer.eos_token_id
        new: list[int] = []
        logits = self._logits(ids)[-1]
        while len(new) < max_new:
            token = int(np.argmax(logits))
            if token == eos:
                break
            new.append(token)
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            if any(s and s in text for s in stop) or len(new) == max_new:
                break
            logits = self._logits(ids + new)[-1]
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        return postprocess_generated_text(text, stop, None)

    # ------------------------------------------------------------------ lm-eval request types

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        """Greedy generation on llama.cpp, after MUSE's context-length check."""
        self.check_generation_room(requests)
        eos = self.tokenizer.decode([self.tokenizer.eos_token_id])
        out = []
        for req in tqdm(requests, disable=disable_tqdm, desc="generate_until (llama.cpp)"):
            context, gen_kwargs = req.args[0], req.args[1]
            kwargs = normalize_gen_kwargs(gen_kwargs, self.max_gen_toks)
            if kwargs.get("do_sample"):
                raise MuseQuantError(
                    f"{describe(req.task_name, req.doc_id, req.doc)}: the llama.cpp model "
                    "generates greedily; do_sample=true is not supported"
                )
            until = handle_stop_sequences(kwargs.get("until"), eos=eos)
            max_new = kwargs["max_gen_toks"]
            ids = self.tok_encode(context)[-(self.max_length - max_new) :]
            out.append(self._greedy(ids, max_new, until))
        return out

    def loglikelihood_rolling(
        self, requests: list[Instance], disable_tqdm: bool = False
    ) -> list[float]:
        """PrivLeak documents get :class:`ScoredText`; others their text's summed log-prob, every
        token scored after one prefix token, as lm-eval's HF model scores it: BOS, or the
        end-of-text token for a tokenizer without BOS (the text must fit the context)."""
        out: list[float] = []
        stats_at = [i for i, r in enumerate(requests) if wants_token_stats(r.doc)]
        wanted = [requests[i] for i in stats_at]
        stats = self.token_stats(
            [r.args[0] for r in wanted],
            [describe(r.task_name, r.doc_id, r.doc) for r in wanted],
            disable_tqdm,
            [r.task_name for r in wanted],
        )
        scored = dict(zip(stats_at, stats, strict=True))
        for i, req in enumerate(requests):
            if i in scored:
                out.append(ScoredText(scored[i]))
                continue
            text = self.tokenizer(req.args[0], add_special_tokens=False)["input_ids"]
            ids = self._scored(
                [self.prefix_token_id, *text], describe(req.task_name, req.doc_id, req.doc)
            )
            logprobs, _, _ = self._score_sequences([(ids, False)], True)[0]
            out.append(float(logprobs.sum()))
        return out

    def loglikelihood(
        self, requests: list[Instance], disable_tqdm: bool = False
    ) -> list[tuple[float, bool]]:
        raise MuseQuantError(
            "the llama.cpp model answers MUSE's requests (generate_until, loglikelihood_rolling); "
            "for multiple-choice tasks evaluate the gguf precision with emulated=true"
        )
