"""SimNPO (Fan, Liu, Lin, Jia, Zhang, Mei & Liu 2024, "Simplicity Prevails"): NPO without the reference model.

Loss over a batch of forget samples (x, y):  L = -(2/β) · mean log σ(β · (ℓ(y|x) − δ)),
where ℓ(y|x) = -log π_θ(y|x) / |y| is the sample's NLL averaged over its scored tokens (the family's
`sample_nll` divided by its token count: next tokens of a causal LM, the masked token of a masked LM) and δ
(`margin`, the paper's γ) a reward margin. Length normalisation is the paper's point: NPO's reference ratio
weights short, easy samples most and lets long ones lag; SimNPO weights every sample by σ(-β(ℓ − δ)) of its
own per-token NLL, so each stops pulling once its tokens are unlikely enough, whatever its length. No second
model and no reference pass. As β → 0 the gradient tends to GA's on per-token-averaged NLL.
With `retain_weight` > 0 the retain set's mean token NLL is added (the paper's regularised form).

Loop as GA and NPO: all floating parameters, Adam, batches of `batch_size` forget samples cycling in a fresh
seeded order each pass, until every forget sample meets the stop threshold (or `max_steps`; without a stop
threshold exactly `max_steps`). Defaults are the paper's TOFU settings (β 2.5, δ 0, lr 1e-5).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lib.core.params import Count, NonNegative, Positive, check_ranges
from lib.methods import Inputs, Report
from lib.methods.training import forget_retain_steps, training_report

label = "SimNPO"  # the name every report prints
families = ("masked", "causal")
needs = ("forget", "retain")
kind = "weights"


@dataclass(frozen=True)
class Config:
    """SimNPO hyper-parameters: inverse temperature β, margin δ, Adam learning rate, batch, step cap, retain weight."""

    beta: Positive = 2.5  # SimNPO paper, TOFU
    margin: float = 0.0  # δ (the paper's γ), TOFU; any sign: it shifts the length-normalised reward
    learning_rate: Positive = 1e-5  # SimNPO paper, TOFU
    batch_size: Count = 32
    max_steps: Count = 100
    retain_weight: NonNegative = 0.0  # > 0: the retain set's mean token NLL times this weight is added

    def __post_init__(self) -> None:
        """Reject values the loop cannot use."""
        check_ranges(self)
        if isinstance(self.margin, bool) or not isinstance(self.margin, (int, float)) or not self.margin == self.margin:
            raise ValueError(f"margin={self.margin!r} invalid; allowed: a number")


def token_counts(inputs: Inputs) -> Tensor:
    """Scored tokens |y| of every forget sample (N,), float32."""
    family, forget = inputs.family, inputs.forget
    return torch.tensor([family.count(forget, [i]) for i in range(len(forget))], dtype=torch.float32)


def simnpo_sum(model: nn.Module, inputs: Inputs, lengths: Tensor, index: list[int], beta: float,
               margin: float) -> Tensor:
    """-(2/β) · Σ log σ(β · (NLL / |y| − δ)) over forget samples `index` (differentiable)."""
    nll = inputs.family.sample_nll(model, inputs.forget, index).float()  # (B,) summed over each sample's tokens
    per_token = nll / lengths.to(nll.device)[index]
    return -(2.0 / beta) * F.logsigmoid(beta * (per_token - margin)).sum()


def run(model: nn.Module, inputs: Inputs, cfg: Config) -> Report:
    """Minimise the SimNPO loss until every forget sample meets the stop threshold, or max_steps."""
    lengths = token_counts(inputs)
    progress = forget_retain_steps(model, inputs,
                                   lambda index: simnpo_sum(model, inputs, lengths, index, cfg.beta, cfg.margin),
                                   cfg.batch_size, cfg.retain_weight, cfg.learning_rate, cfg.max_steps, "simnpo")
    return training_report(model, inputs, progress, {"optimizer": "adam", "learning_rate": cfg.learning_rate,
                                                     "beta": cfg.beta, "margin": cfg.margin,
                                                     "retain_weight": cfg.retain_weight})
