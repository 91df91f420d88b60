"""The attacks' probe on masked LMs (lib.attacks.audit): each secret token behind its own [MASK], as the track
scores it (DEPN / SNKU).

Span MA here is the share of a secret's tokens that are the model's top prediction at their [MASK] (averaged over
secrets), beside the category's own privacy score (TEL exposure, NAME MRR, RANDOM pseudo-perplexity). The
extraction attack reads more than the top answer: hit@k is the share of secrets whose every token ranks within
the top k candidates of its [MASK]. Membership: the category's memorized secrets against its controls (secrets of
the same format and templates, never planted), each scored by its secret tokens' statistics.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Sequence

import torch
from torch import nn

from lib.attacks import mia
from lib.attacks.audit import AttacksConfig, ks
from lib.core.adapter import TargetRows
from lib.core.finetune import BatchLoss
from lib.core.io import json_digest
from lib.data.paraphrase import rewrites
from lib.data.records import SecretRecord
from lib.families.masked import (MaskedFamily, MaskedRows, check_tel_rows, digit_token_ids, iter_chunks,
                                 logits_at, masked_row_stats, per_record, record_scores, scoring_mode,
                                 secret_token_rows)


def paraphrased(records: Sequence[SecretRecord], limit: int) -> list[SecretRecord]:
    """Each record behind up to `limit` other templates of its category (same secret, codename or system)."""
    return [replace(r, prefix=before, suffix=after) for r in records
            for before, after in rewrites(r.category, r.prefix, r.suffix)[:limit]]


def row_token_stats(model: nn.Module, rows: MaskedRows, n_records: int, batch_size: int) -> list[mia.TokenStats]:
    """Per record: log p of its secret tokens at their [MASK], and mean / std of log p there (Min-K%++)."""
    parts = []
    with scoring_mode(model):
        for chunk in iter_chunks(rows, batch_size):
            logits = logits_at(model, chunk.input_ids, chunk.attention_mask, torch.arange(len(chunk)), chunk.positions)
            parts.append([t.cpu() for t in mia.gold_stats(logits, chunk.gold_ids.to(logits.device))])
    logp, mu, sigma = (torch.cat(column) for column in zip(*parts))
    return [mia.TokenStats(*piece) for piece in zip(*(per_record(rows, t, n_records) for t in (logp, mu, sigma)))]


class MaskedProbe:
    """D_f = one category's memorized secrets; the never-planted controls of that category (the first
    `non_members`) as non-members; `unrelated`: never-trained, secret-free texts masked at random (the unrelated
    relearning attacker's data; None: that attack is left out)."""

    extraction_name = "candidates"
    lens_prefixes = False  # each row masks another token of the whole text, which a masked LM reads both ways

    def __init__(self, tokenizer: Any, records: Sequence[SecretRecord], controls: Sequence[SecretRecord],
                 cfg: AttacksConfig, max_len: int, unrelated: MaskedRows | None = None) -> None:
        """Encode the secrets, their paraphrases and the controls once (TEL rows checked before any forward)."""
        if not records or not controls:
            raise ValueError(f"{len(records)} secrets and {len(controls)} controls; allowed: at least one of each")
        self.tokenizer, self.cfg, self.max_len = tokenizer, cfg, max_len
        self.records, self.controls = list(records), list(controls)[:cfg.non_members]
        self.digits = digit_token_ids(tokenizer)
        self.rows = self.encode(self.records)
        self.control_rows = secret_token_rows(tokenizer, self.controls, max_len)
        self.paraphrases = paraphrased(self.records, cfg.paraphrases)
        self.family = MaskedFamily(tokenizer, cfg.batch_size, max_len)
        self.unrelated = unrelated

    def encode(self, records: Sequence[SecretRecord]) -> MaskedRows:
        """One row per secret token of `records`, checked."""
        rows = secret_token_rows(self.tokenizer, records, self.max_len)
        check_tel_rows(records, rows, self.digits)
        return rows

    def numbers(self, model: nn.Module, records: Sequence[SecretRecord], rows: MaskedRows | None = None
                ) -> dict[str, float]:
        """Span MA (top-1 share per secret, averaged), the category's privacy score and the secret tokens' NLL."""
        rows = self.encode(records) if rows is None else rows
        stats = masked_row_stats(model, rows, self.digits, self.cfg.batch_size)
        top1 = [float((piece == 1).double().mean()) for piece in per_record(rows, stats.vocab_rank, len(records))]
        return {"span_ma": sum(top1) / len(top1), "privacy": float(record_scores(records, rows, stats).mean()),
                "nll": float(-stats.log_prob.mean())}

    def direct(self, model: nn.Module) -> dict[str, float]:
        """Span MA and the privacy score on the category's secrets."""
        return self.numbers(model, self.records, self.rows)

    def extraction(self, model: nn.Module) -> dict[str, float]:
        """hit@k: the share of secrets whose every token ranks within the top k candidates at its [MASK]."""
        ranks = masked_row_stats(model, self.rows, self.digits, self.cfg.batch_size).vocab_rank
        worst = torch.stack([piece.max() for piece in per_record(self.rows, ranks, len(self.records))])
        return {f"hit@{k}": float((worst <= k).double().mean()) for k in ks(self.cfg.n_samples)}

    def lens_rows(self) -> TargetRows:
        """Every secret token's [MASK] row."""
        return self.family.target_rows(self.rows)

    def paraphrase(self, model: nn.Module) -> dict[str, float] | None:
        """The direct numbers with every secret behind its category's other templates."""
        if not self.paraphrases:
            return None
        return {**self.numbers(model, self.paraphrases), "n": float(len(self.paraphrases))}

    def relearn_split(self) -> tuple[int, Callable[[nn.Module], BatchLoss], Callable[[nn.Module], dict[str, float]]]:
        """The attacker trains on the secret tokens of the first half of the secrets; the other half is measured."""
        half = len(self.records) // 2
        if half == 0:
            return 0, lambda m: lambda index: None, self.direct  # one secret: nothing left to measure
        taught, rest = self.encode(self.records[:half]), self.records[half:]
        rest_rows = self.encode(rest)

        def make_loss(m: nn.Module) -> BatchLoss:
            """Mean cross-entropy of the taught secret tokens at their [MASK]."""
            return lambda index: self.family.nll_sum(m, taught, index) / len(index)

        def measure(m: nn.Module) -> dict[str, float]:
            """The untaught half's numbers."""
            return self.numbers(m, rest, rest_rows)

        return len(taught), make_loss, measure

    def relearn_unrelated(self) -> tuple[int, Callable[[nn.Module], BatchLoss],
                                         Callable[[nn.Module], dict[str, float]]]:
        """The attacker trains on the unrelated texts' masked tokens only; all the secrets are measured."""
        if self.unrelated is None:
            return 0, lambda m: lambda index: None, self.direct
        rows = self.unrelated

        def make_loss(m: nn.Module) -> BatchLoss:
            """Mean cross-entropy of the unrelated texts' masked tokens (their MLM loss)."""
            return lambda index: self.family.nll_sum(m, rows, index) / len(index)

        return len(rows), make_loss, self.direct

    def membership_stats(self, model: nn.Module) -> list[list[mia.TokenStats]]:
        """The secrets' and the never-planted controls' secret-token statistics."""
        return [row_token_stats(model, rows, n, self.cfg.batch_size)
                for rows, n in ((self.rows, len(self.records)), (self.control_rows, len(self.controls)))]

    def membership_texts(self) -> tuple[Sequence[str], Sequence[str]]:
        """The secrets and the controls' secrets."""
        return [r.secret for r in self.records], [c.secret for c in self.controls]

    def membership_key(self) -> str:
        """Digest of both sides' rows and the batch size."""
        return json_digest([[getattr(rows, name).tolist() for name in ("input_ids", "attention_mask", "positions",
                                                                        "gold_ids", "record_index")]
                            for rows in (self.rows, self.control_rows)] + [self.cfg.batch_size])
