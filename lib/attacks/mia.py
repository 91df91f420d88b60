"""Membership inference: the field's standard scores, their AUC, and MUSE's PrivLeak.

Each score is "higher = more likely a member" and reads per-token statistics of one text under the model:
its tokens' log-probabilities, and for Min-K%++ the mean and standard deviation of the log-probability
under the model's own next-token distribution at each position.

- LOSS (Yeom et al. 2018): the mean token log-probability.
- zlib (Carlini et al. 2021): the summed log-probability over the text's zlib-compressed length.
- Min-K% (Shi et al. 2024): the mean of the k% lowest token log-probabilities.
- Min-K%++ (Zhang et al. 2024): the mean of the k% lowest (log p(x_t) - mu_t) / sigma_t.
- Reference (Carlini et al. 2021): the target's LOSS minus a reference model's (here the retrained model).

PrivLeak (Shi et al. 2024, MUSE) = (AUC(unlearned) - AUC(retrained)) / AUC(retrained), on the same forget
(members) and holdout (non-members) texts: 0 when the unlearned model is as private as the retrained one,
positive when it still leaks membership.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Sequence

import torch
from sklearn.metrics import roc_auc_score
from torch import Tensor, nn

from lib.families.causal import Sequences, batches, logits_of, pad

SCORES = ("loss", "zlib", "min_k", "min_k_pp")


@dataclass(frozen=True)
class TokenStats:
    """Per-token statistics of one text: log p of each target token, and mu, sigma of log p at its position."""

    logp: Tensor  # (n,) float32
    mu: Tensor  # (n,)
    sigma: Tensor  # (n,)


def gold_stats(logits: Tensor, gold: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """log p of each gold id and the mean and standard deviation of log p under the distribution at its position,
    in float32 (logits (..., V), gold (...))."""
    logp_all = torch.log_softmax(logits.float(), dim=-1)
    logp = logp_all.gather(-1, gold.unsqueeze(-1)).squeeze(-1)
    probs = logp_all.exp()
    mu = (probs * logp_all).sum(-1)
    sigma = ((probs * logp_all.square()).sum(-1) - mu.square()).clamp_min(1e-12).sqrt()
    return logp, mu, sigma


def token_stats(model: nn.Module, seqs: Sequences, pad_id: int, batch_size: int = 16) -> list[TokenStats]:
    """TokenStats of tokens 1..T-1 of each sequence (causal LM), computed in float32 on the model's device."""
    out: list[TokenStats] = []
    with torch.no_grad():
        for index in batches(len(seqs), batch_size):
            ids, mask = pad([seqs.ids[i] for i in index], pad_id)
            logits = logits_of(model, ids, mask)  # (B, T-1, V)
            logp, mu, sigma = gold_stats(logits, ids[:, 1:].to(logits.device))
            valid = mask[:, 1:].bool()
            for row in range(len(index)):
                keep = valid[row].to(logp.device)
                out.append(TokenStats(logp[row][keep].cpu(), mu[row][keep].cpu(), sigma[row][keep].cpu()))
    return out


def _lowest_mean(values: Tensor, fraction: float) -> float:
    """Mean of the ceil(fraction * n) lowest values."""
    k = max(1, math.ceil(fraction * values.numel()))
    return float(values.sort().values[:k].mean())


def score(stats: TokenStats, text: str, kind: str, k: float = 0.2) -> float:
    """One membership score (higher = more likely a member) of a text from its token statistics."""
    if stats.logp.numel() == 0:
        raise ValueError("a text without scored tokens has no membership score; allowed: at least 2 tokens")
    if kind == "loss":
        return float(stats.logp.mean())
    if kind == "zlib":
        return float(stats.logp.sum()) / len(zlib.compress(text.encode("utf-8")))
    if kind == "min_k":
        return _lowest_mean(stats.logp, k)
    if kind == "min_k_pp":
        return _lowest_mean((stats.logp - stats.mu) / stats.sigma, k)
    raise ValueError(f"membership score {kind!r} unknown; allowed: {', '.join(SCORES)}")


def pack(sides: Sequence[Sequence[TokenStats]]) -> dict[str, Tensor]:
    """Token statistics of each side (members, non-members) as flat tensors, for a safetensors file."""
    out = {}
    for i, side in enumerate(sides):
        out[f"{i}.lengths"] = torch.tensor([len(st.logp) for st in side], dtype=torch.long)
        for name in ("logp", "mu", "sigma"):
            out[f"{i}.{name}"] = torch.cat([getattr(st, name) for st in side]) if side else torch.zeros(0)
    return out


def unpack(tensors: dict[str, Tensor]) -> list[list[TokenStats]]:
    """The sides `pack` flattened."""
    out = []
    for i in sorted({int(key.split(".")[0]) for key in tensors}):
        lengths = tensors[f"{i}.lengths"].tolist()
        columns = (tensors[f"{i}.{name}"].split(lengths) for name in ("logp", "mu", "sigma"))
        out.append([TokenStats(*parts) for parts in zip(*columns)])
    return out


def reference_scores(target: Sequence[TokenStats], reference: Sequence[TokenStats]) -> list[float]:
    """Reference attack: the target's mean log p minus the reference model's, per text."""
    return [float(t.logp.mean() - r.logp.mean()) for t, r in zip(target, reference, strict=True)]


def auc(members: Sequence[float], non_members: Sequence[float]) -> float:
    """ROC AUC of telling members from non-members by score (0.5 = chance, 1 = every member scores higher)."""
    if not members or not non_members:
        raise ValueError(f"AUC needs both sides; got {len(members)} members and {len(non_members)} non-members")
    return float(roc_auc_score([1] * len(members) + [0] * len(non_members), [*members, *non_members]))


def priv_leak(auc_unlearned: float, auc_retrained: float) -> float:
    """MUSE's PrivLeak: the unlearned model's AUC relative to the retrained model's (0 = as private)."""
    if not auc_retrained > 0:
        raise ValueError(f"auc_retrained={auc_retrained}; allowed: > 0")
    return (auc_unlearned - auc_retrained) / auc_retrained
