"""The loss terms of the recipes, on padded batches (``input_ids``, ``attention_mask``, ``labels``).

Log-probabilities are taken in float32 whatever the parameters' dtype, so bf16 training and fp32
training differ only in how the update is stored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def token_logprobs(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """log p(token_t | tokens_<t) per position (shape batch x len-1), 0 on padding."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
    labels = batch["labels"][:, 1:]
    picked = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return picked * (labels != -100)


def mean_nll(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token NLL over the batch's real tokens (the usual LM loss)."""
    n_tokens = (batch["labels"][:, 1:] != -100).sum()
    return -token_logprobs(model, batch).sum() / n_tokens


def sequence_logprob(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """log p(sequence) per example: the sum of its token log-probs (NPO's unit)."""
    return token_logprobs(model, batch).sum(-1)


def npo_loss(logp: torch.Tensor, ref_logp: torch.Tensor, beta: float) -> torch.Tensor:
    """NPO (Zhang et al. 2024): -(2/beta) E[log sigmoid(-beta log(pi_theta / pi_ref))]."""
    return -(2.0 / beta) * F.logsigmoid(-beta * (logp - ref_logp)).mean()


def retain_kl(
    model: torch.nn.Module, reference: torch.nn.Module, batch: dict[str, torch.Tensor]
) -> torch.Tensor:
    """KL(reference || model) of the next-token distributions, mean over real tokens (KLR)."""
    kw = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    logp = F.log_softmax(model(**kw).logits[:, :-1].float(), dim=-1)
    with torch.no_grad():
        ref = F.log_softmax(reference(**kw).logits[:, :-1].float(), dim=-1)
    per_token = F.kl_div(logp, ref, log_target=True, reduction="none").sum(-1)
    mask = batch["labels"][:, 1:] != -100
    return (per_token * mask).sum() / mask.sum()
