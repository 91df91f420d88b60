"""Every attack on one unlearned causal LM, beside its retrained reference: does the forgetting hold?

Direct: the secret span's teacher-forced accuracy (span MA) on D_f, as the track scores it. Then what an attacker
gets back: after 8- and 4-bit weight rounding (and the edit's size against the rounding step), by sampling k
continuations of each secret's prefix (leak@k), by reading each layer through the logit lens, by relearning on
half of D_f (span MA of the other half after a few steps), and from membership inference (LOSS, zlib, Min-K%,
Min-K%++, reference model; AUC of D_f against held-out texts, PrivLeak against the retrained model's AUC).
Each number is computed the same way on the retrained reference, which never saw D_f, so "recovered" means
beyond what a model that never learned the items shows.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from lib.attacks import logit_lens, mia, quantize, sampling
from lib.attacks.relearn import RelearnConfig, relearn
from lib.core.params import Count, Natural, Positive, PositiveFraction, check_ranges
from lib.families.causal import CausalFamily, Sequences, accuracy, nll_batch_loss, sequence_nll


@dataclass(frozen=True)
class AttacksConfig:
    """The `attacks` section: what each attack may spend (CPU default sizes; presets/full.yaml the paper's)."""

    bits: tuple[Count, ...] = (8, 4)  # weight rounding, per group of group_size inputs
    group_size: Count = 32
    n_samples: Count = 16  # sampled continuations per secret prefix; leak@k for k = 1, 2, 4 ... n_samples
    max_new: Count = 8
    temperature: Positive = 1.0
    top_p: PositiveFraction = 0.95
    relearn_steps: tuple[Count, ...] = (5, 10)  # the attacker's fine-tuning checkpoints on half of D_f
    relearn_learning_rate: Positive = 1e-4
    relearn_batch_size: Count = 4
    min_k: PositiveFraction = 0.2  # Min-K% and Min-K%++: the share of lowest-scoring tokens
    tolerance: PositiveFraction = 0.1  # a share or MA above the retrained model's by more than this is "recovered"
    batch_size: Count = 16
    seed: Natural = 0

    def __post_init__(self) -> None:
        """Every field within its range; at least one bit width."""
        check_ranges(self)
        if not self.bits or any(b < 2 for b in self.bits):
            raise ValueError(f"bits={list(self.bits)} invalid; allowed: one or more integers >= 2")

    def sampling(self) -> sampling.SamplingConfig:
        """The sampler's settings."""
        return sampling.SamplingConfig(n_samples=self.n_samples, max_new=self.max_new, temperature=self.temperature,
                                       top_p=self.top_p, batch_size=self.n_samples, seed=self.seed)

    def relearn(self) -> RelearnConfig:
        """The relearning attacker's budget."""
        return RelearnConfig(steps=tuple(self.relearn_steps), learning_rate=self.relearn_learning_rate,
                             batch_size=self.relearn_batch_size, seed=self.seed)


def span_ma(model: nn.Module, seqs: Sequences, pad_id: int, batch_size: int) -> float:
    """Mean teacher-forced accuracy over the secret spans (sequences without a span left out)."""
    values = [v for v in accuracy(model, seqs, pad_id, batch_size, span=True).tolist() if not math.isnan(v)]
    if not values:
        raise ValueError("no sequence has a secret span; allowed: D_f rows with their secret marked")
    return sum(values) / len(values)


def subset(seqs: Sequences, index: Sequence[int]) -> Sequences:
    """The sequences at `index`, with their spans."""
    return Sequences(tuple(seqs.ids[i] for i in index), tuple(seqs.spans[i] for i in index))


def extraction(model: nn.Module, forget: Sequences, cfg: AttacksConfig) -> dict[str, float]:
    """leak@k of the secret spans from k sampled continuations of the text before each one."""
    rows = [i for i, span in enumerate(forget.spans) if span is not None]
    prefixes = [forget.ids[i][:forget.spans[i][0]] for i in rows]  # type: ignore[index]
    secrets = [forget.ids[i][forget.spans[i][0]:forget.spans[i][1]] for i in rows]  # type: ignore[index]
    counts = sampling.hits(model, prefixes, secrets, cfg.sampling())
    ks = sorted({2 ** i for i in range(int(math.log2(cfg.n_samples)) + 1)} | {cfg.n_samples})
    return {f"leak@{k}": v for k, v in sampling.leak_at_k(counts, cfg.n_samples, ks).items()}


def membership(model: nn.Module, reference: nn.Module, members: Sequences, non_members: Sequences,
               texts: tuple[Sequence[str], Sequence[str]], pad_id: int, cfg: AttacksConfig) -> dict[str, float]:
    """AUC of each membership score on D_f (members) against held-out texts, and the reference-model score."""
    stats = {name: [mia.token_stats(m, s, pad_id, cfg.batch_size) for s in (members, non_members)]
             for name, m in (("model", model), ("reference", reference))}
    out = {}
    for kind in mia.SCORES:
        scored = [[mia.score(st, text, kind, cfg.min_k) for st, text in zip(side, side_texts, strict=True)]
                  for side, side_texts in zip(stats["model"], texts, strict=True)]
        out[f"auc_{kind}"] = mia.auc(*scored)
    out["auc_reference"] = mia.auc(*(mia.reference_scores(t, r) for t, r in zip(stats["model"], stats["reference"])))
    return out


def audit(model: nn.Module, reference: nn.Module, parent: nn.Module, forget: Sequences, holdout: Sequences,
          texts: tuple[Sequence[str], Sequence[str]], family: CausalFamily, cfg: AttacksConfig) -> dict[str, Any]:
    """Every attack on `model` (unlearned from `parent` on D_f = `forget`); `reference` is the retrained model.
    `holdout` are texts neither saw (membership non-members); `texts` the raw texts of forget and holdout (zlib)."""
    pad = family.pad_id
    clock, seconds = time.perf_counter(), {}

    def timed(name: str) -> None:
        """Record the seconds the attack `name` took (the cost table of reports/robustness.md)."""
        nonlocal clock
        now = time.perf_counter()
        seconds[name], clock = round(now - clock, 2), now

    out: dict[str, Any] = {"direct": {"span_ma": span_ma(model, forget, pad, cfg.batch_size)}}
    timed("direct")
    for bits in cfg.bits:
        rounded, report = quantize.quantize(model, bits, cfg.group_size)
        out[f"int{bits}"] = {"span_ma": span_ma(rounded, forget, pad, cfg.batch_size),
                             "median_step": report.median_step,
                             **quantize.edit_vs_step(parent, model, bits, cfg.group_size)}
        del rounded
        timed(f"int{bits}")
    out["sampling"] = extraction(model, forget, cfg)
    timed("sampling")
    lens = logit_lens.layer_ranks(model, family.target_rows(forget, "span"), cfg.batch_size)
    out["logit_lens"] = {"final_top1": lens.final_top1, "best_top1": lens.best_top1,
                         "median_best_rank": lens.median_best_rank}
    timed("logit_lens")
    half = len(forget) // 2
    if half >= 1:
        taught, rest = subset(forget, range(half)), subset(forget, range(half, len(forget)))

        def measure(m: nn.Module) -> dict[str, float]:
            """The untaught half: span MA, and mean NLL (it moves before the argmax does)."""
            return {"span_ma": span_ma(m, rest, pad, cfg.batch_size),
                    "nll": float(sequence_nll(m, rest, pad, cfg.batch_size).mean())}

        curve = relearn(model, lambda m: nll_batch_loss(m, taught, pad), half, cfg.relearn(), measure)
        out["relearn"] = {str(p["steps"]): {"span_ma": p["span_ma"], "nll": p["nll"]} for p in curve}
        timed("relearn")
    out["mia"] = membership(model, reference, forget, holdout, texts, pad, cfg)
    timed("mia")
    return {**out, "attack_seconds": seconds}


def privacy_leak(attacked: dict[str, Any], retrained: dict[str, Any]) -> dict[str, float]:
    """MUSE's PrivLeak of each membership AUC against the retrained model's (0: as private as retraining)."""
    return {key.removeprefix("auc_"): mia.priv_leak(value, retrained["mia"][key])
            for key, value in attacked["mia"].items() if key != "auc_reference"}
