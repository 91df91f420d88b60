"""The attacks' probe on causal LMs (lib.attacks.audit): D_f's secret spans read by teacher forcing and sampling.
(the causal track's; a benchmark run's comes from lib.bench.probe)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar, Sequence

import torch
from torch import nn

from lib.attacks import mia, sampling
from lib.attacks.audit import AttacksConfig, ks
from lib.core.adapter import TargetRows
from lib.core.finetune import BatchLoss
from lib.core.io import json_digest
from lib.families.causal import (CausalFamily, Sequences, _span_mask, batches, logits_of, mean_ma, nll_batch_loss,
                                 on_model, pad)


def span_ma(model: nn.Module, seqs: Sequences, pad_id: int, batch_size: int) -> float:
    """Mean teacher-forced accuracy over the secret spans (sequences without a span left out)."""
    return mean_ma(model, seqs, pad_id, batch_size, span=True)


def span_ma_nll(model: nn.Module, seqs: Sequences, pad_id: int, batch_size: int) -> dict[str, float]:
    """Span MA (as span_ma) and the mean per-sequence NLL (as sequence_nll's mean) from one forward per batch: the
    relearning attackers measure both at every checkpoint, and the forward over D_f is most of their cost."""
    hits: list[float] = []
    nlls: list[torch.Tensor] = []
    with torch.no_grad():
        for index in batches(len(seqs), batch_size):
            ids, mask = on_model(model, *pad([seqs.ids[i] for i in index], pad_id))
            logits = logits_of(model, ids, mask)
            valid = mask[:, 1:].bool()
            nll = nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none") * valid
            nlls.append((nll.sum(1) / valid.sum(1)).cpu())
            hit = (logits.argmax(-1) == ids[:, 1:]).cpu()
            scored = _span_mask(seqs, index, hit.shape[1])
            share = (hit & scored).sum(1) / scored.sum(1).clamp(min=1)
            hits.extend(v for v, has in zip(share.tolist(), scored.any(1).tolist()) if has)
    if not hits:
        raise ValueError("no sequence has a secret span; allowed: sequences with their secret span marked")
    return {"span_ma": sum(hits) / len(hits), "nll": float(torch.cat(nlls).mean())}


@dataclass(frozen=True)
class CausalProbe:
    """D_f (`forget`, spans marked), never-trained texts (`holdout`: the membership non-members and the unrelated
    relearning attacker's data), both raw texts (zlib), D_f's paraphrased samples (None: no template) and the
    family; `secret_tokens` caps what the extraction attack looks for and the logit lens reads at each span's first
    tokens (None: the whole span)."""

    forget: Sequences
    holdout: Sequences
    texts: tuple[Sequence[str], Sequence[str]]
    paraphrased: Sequences | None
    family: CausalFamily
    cfg: AttacksConfig
    extraction_name: str = "sampling"
    secret_tokens: int | None = None
    lens_prefixes: ClassVar[bool] = True

    def direct(self, model: nn.Module) -> dict[str, float]:
        """Span MA and mean NLL on D_f."""
        return span_ma_nll(model, self.forget, self.family.pad_id, self.cfg.batch_size)

    def extraction(self, model: nn.Module) -> dict[str, float]:
        """leak@k of the secret spans (their first secret_tokens) from k sampled continuations of the text before
        each one."""
        forget = self.capped()
        marked = [(ids, span) for ids, span in zip(forget.ids, forget.spans) if span is not None]
        prefixes = [ids[:start] for ids, (start, _) in marked]
        secrets = [ids[start:end] for ids, (start, end) in marked]
        counts = sampling.hits(model, prefixes, secrets, self.cfg.sampling())
        return {f"leak@{k}": v for k, v in sampling.leak_at_k(counts, self.cfg.n_samples, ks(self.cfg.n_samples)).items()}

    def lens_rows(self) -> TargetRows:
        """Every secret token of D_f (the first secret_tokens of each span when capped: a row per token, and a long
        answer has a hundred)."""
        return self.family.target_rows(self.capped(), "span")

    def capped(self) -> Sequences:
        """D_f with each span cut to its first secret_tokens (as it is when uncapped)."""
        if self.secret_tokens is None:
            return self.forget
        cap = self.secret_tokens
        return Sequences(self.forget.ids, tuple(None if span is None else (span[0], min(span[1], span[0] + cap))
                                                for span in self.forget.spans))

    def paraphrase(self, model: nn.Module) -> dict[str, float] | None:
        """Span MA of the secrets inside the category's other sentence templates."""
        if self.paraphrased is None:
            return None
        return {"span_ma": span_ma(model, self.paraphrased, self.family.pad_id, self.cfg.batch_size),
                "n": float(len(self.paraphrased))}

    def relearn_split(self) -> tuple[int, Callable[[nn.Module], BatchLoss], Callable[[nn.Module], dict[str, float]]]:
        """The attacker trains on the first half of D_f; the other half is measured."""
        half, pad_id, size = len(self.forget) // 2, self.family.pad_id, self.cfg.batch_size
        taught, rest = self.forget.subset(range(half)), self.forget.subset(range(half, len(self.forget)))

        def measure(m: nn.Module) -> dict[str, float]:
            """The untaught half: span MA, and mean NLL (it moves before the argmax does)."""
            return span_ma_nll(m, rest, pad_id, size)

        return half, lambda m: nll_batch_loss(m, taught, pad_id), measure

    def relearn_unrelated(self) -> tuple[int, Callable[[nn.Module], BatchLoss],
                                         Callable[[nn.Module], dict[str, float]]]:
        """The attacker trains on the never-trained texts only; all of D_f is measured (as `direct`)."""
        return len(self.holdout), lambda m: nll_batch_loss(m, self.holdout, self.family.pad_id), self.direct

    def membership_stats(self, model: nn.Module) -> list[list[mia.TokenStats]]:
        """D_f's and the held-out texts' token statistics."""
        return [mia.token_stats(model, s, self.family.pad_id, self.cfg.batch_size) for s in (self.forget, self.holdout)]

    def membership_texts(self) -> tuple[Sequence[str], Sequence[str]]:
        """D_f's and the held-out raw texts."""
        return self.texts

    def membership_key(self) -> str:
        """Digest of both sides' ids, the pad id and the batch size (the padding)."""
        return json_digest([self.forget.ids, self.holdout.ids, self.family.pad_id, self.cfg.batch_size])

