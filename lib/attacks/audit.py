"""Every attack on one unlearned model, beside its retrained reference: does the forgetting hold?

The attacks are the same for both families; what each one measures comes from the family's probe (lib.attacks.
causal, lib.attacks.masked): the secret tokens' accuracy (span MA) on D_f as the track scores it, then what an
attacker gets back: after 8- and 4-bit weight rounding (and the edit's size against the rounding step), from more
than the top answer (leak@k of sampled continuations on causal LMs, the top-k candidates at each [MASK] on masked
LMs), by reading each layer through the logit lens, under paraphrased prompts (the category's other sentence
templates), by relearning on half of D_f (span MA of the other half after a few steps) or on unrelated text only
(never-trained, secret-free texts of the same domain: span MA of all of D_f), and from membership
inference (LOSS, zlib, Min-K%, Min-K%++, reference model; AUC of D_f against never-trained items, PrivLeak
against the retrained model's AUC). Each number is computed the same way on the retrained reference, which
never saw D_f, so "recovered" means beyond what a model that never learned the items shows.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol, Sequence

from torch import nn

from lib.attacks import logit_lens, mia, quantize, sampling
from lib.attacks.relearn import RelearnConfig, relearn
from lib.core.adapter import TargetRows
from lib.core.finetune import BatchLoss
from lib.core.params import Count, Natural, Positive, PositiveFraction, check_ranges


@dataclass(frozen=True)
class AttacksConfig:
    """The `attacks` section: what each attack may spend (CPU default sizes; presets/full.yaml the paper's)."""

    bits: tuple[Count, ...] = (8, 4)  # weight rounding, per group of group_size inputs
    group_size: Count = 32
    n_samples: Count = 16  # sampled continuations per secret prefix (causal), candidates per [MASK] (masked): k = 1, 2 ..
    max_new: Count = 8
    temperature: Positive = 1.0
    top_p: PositiveFraction = 0.95
    paraphrases: Count = 2  # other templates per secret (the paraphrase attack), the ones after its own first
    non_members: Count = 64  # masked track: the category's controls scored as non-members (membership inference)
    relearn_steps: tuple[Count, ...] = (3, 6)  # the attacker's fine-tuning checkpoints on half of D_f
    relearn_learning_rate: Positive = 1e-4
    relearn_batch_size: Count = 2
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
                                       top_p=self.top_p, seed=self.seed)  # 64 rows a forward, across prefixes

    def relearn(self) -> RelearnConfig:
        """The relearning attacker's budget."""
        return RelearnConfig(steps=tuple(self.relearn_steps), learning_rate=self.relearn_learning_rate,
                             batch_size=self.relearn_batch_size, seed=self.seed)


class Probe(Protocol):
    """What the attacks measure on one family: the direct score, the extraction attack, the lens targets, the
    paraphrased prompts, the relearning split and membership."""

    extraction_name: str  # the key of the extraction attack's numbers: sampling (causal) or candidates (masked)
    lens_prefixes: bool  # lens_rows of one sample are prefixes of one text a causal LM reads (logit_lens.layer_ranks)

    def direct(self, model: nn.Module) -> dict[str, float]:
        """The direct forgetting numbers (span_ma first) on D_f."""

    def extraction(self, model: nn.Module) -> dict[str, float]:
        """Share of secrets recovered with k tries, for each k."""

    def lens_rows(self) -> TargetRows:
        """The secret tokens, as lens targets."""

    def paraphrase(self, model: nn.Module) -> dict[str, float] | None:
        """The direct numbers under the category's other templates; None when D_f holds no template."""

    def relearn_split(self) -> tuple[int, Callable[[nn.Module], BatchLoss], Callable[[nn.Module], dict[str, float]]]:
        """(items the attacker trains on, their batch loss on a model, the measure of the rest: span_ma, nll)."""

    def relearn_unrelated(self) -> tuple[int, Callable[[nn.Module], BatchLoss], Callable[[nn.Module], dict[str, float]]]:
        """(unrelated items the attacker trains on, their batch loss on a model, the measure of all of D_f: the numbers
        of `direct`, so the audit reuses them at step 0); 0 items when the probe has none."""

    def membership_stats(self, model: nn.Module) -> list[list[mia.TokenStats]]:
        """Token statistics of D_f (the members) and of the never-trained items (the non-members) under `model`."""

    def membership_texts(self) -> tuple[Sequence[str], Sequence[str]]:
        """The members' and the non-members' texts (zlib's compressed length)."""

    def membership_key(self) -> str:
        """Content digest of what membership_stats reads: the key under which a reference's statistics are kept."""


def audit(model: nn.Module, reference: Sequence[Sequence[mia.TokenStats]], parent: nn.Module, probe: Probe,
          cfg: AttacksConfig) -> dict[str, Any]:
    """Every attack on `model` (unlearned from `parent`); `reference`: the retrained model's membership statistics
    (probe.membership_stats of it: one model's for every audit); seconds per attack."""
    clock, seconds = time.perf_counter(), {}

    def timed(name: str) -> None:
        """Record the seconds the attack `name` took (the cost table of reports/robustness.md)."""
        nonlocal clock
        now = time.perf_counter()
        seconds[name], clock = round(now - clock, 2), now

    out: dict[str, Any] = {"direct": probe.direct(model)}
    timed("direct")
    for bits in cfg.bits:
        rounded, report = quantize.quantize(model, bits, cfg.group_size)
        out[f"int{bits}"] = {**probe.direct(rounded), "median_step": report.median_step,
                             **quantize.edit_vs_step(parent, model, bits, cfg.group_size)}
        del rounded
        timed(f"int{bits}")
    out[probe.extraction_name] = probe.extraction(model)
    timed(probe.extraction_name)
    lens = logit_lens.layer_ranks(model, probe.lens_rows(), cfg.batch_size, probe.lens_prefixes)
    out["logit_lens"] = {"final_top1": lens.final_top1, "best_top1": lens.best_top1,
                         "median_best_rank": lens.median_best_rank}
    timed("logit_lens")
    paraphrased = probe.paraphrase(model)
    if paraphrased is not None:
        out["paraphrase"] = paraphrased
        timed("paraphrase")
    for key, (n_items, make_loss, measure), start in (("relearn", probe.relearn_split(), None),
                                                     ("relearn_unrelated", probe.relearn_unrelated(), out["direct"])):
        if n_items >= 1:
            curve = relearn(model, make_loss, n_items, cfg.relearn(), measure, start)
            out[key] = {str(p["steps"]): {k: v for k, v in p.items() if k != "steps"} for p in curve}
            timed(key)
    out["mia"] = mia_aucs({"model": probe.membership_stats(model), "reference": reference},
                          probe.membership_texts(), cfg.min_k)
    timed("mia")
    return {**out, "attack_seconds": seconds}


def ks(n: int) -> list[int]:
    """The k of leak@k / hit@k: 1, 2, 4, ... up to n, and n."""
    return sorted({2 ** i for i in range(int(math.log2(n)) + 1)} | {n})


def mia_aucs(stats: Mapping[str, Sequence[Sequence[mia.TokenStats]]], texts: tuple[Sequence[str], Sequence[str]],
             min_k: float) -> dict[str, float]:
    """AUC of each membership score from the token statistics of members and non-members under the model and
    under the reference ({"model": (members, non), "reference": (members, non)}), and of the reference score."""
    out = {}
    for kind in mia.SCORES:
        scored = [[mia.score(st, text, kind, min_k) for st, text in zip(side, side_texts, strict=True)]
                  for side, side_texts in zip(stats["model"], texts, strict=True)]
        out[f"auc_{kind}"] = mia.auc(*scored)
    out["auc_reference"] = mia.auc(*(mia.reference_scores(t, r) for t, r in zip(stats["model"], stats["reference"])))
    return out


def flat_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """One audit's numbers as MLflow metric names: int4.span_ma, sampling.leak_at_8, relearn.10.nll, seconds.mia
    ('@' is no allowed character there)."""
    out: dict[str, float] = {}

    def walk(prefix: str, node: Any) -> None:
        """Flatten nested dicts of numbers into dotted keys."""
        if isinstance(node, Mapping):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
        elif isinstance(node, (int, float)) and not isinstance(node, bool):
            out[prefix.replace("@", "_at_").replace("attack_seconds", "seconds")] = float(node)

    walk("", result)
    return out


def privacy_leak(attacked: dict[str, Any], retrained: dict[str, Any]) -> dict[str, float]:
    """MUSE's PrivLeak of each membership AUC against the retrained model's (0: as private as retraining)."""
    return {key.removeprefix("auc_"): mia.priv_leak(value, retrained["mia"][key])
            for key, value in attacked["mia"].items() if key != "auc_reference"}
