"""Task arithmetic (TA, Ilharco et al. 2023): subtract the forget set's task vector.

Fine-tune the model on the forget set (gradient DESCENT on the causal-LM loss, Adam, all
floating parameters: embeddings, norms, biases included; a weight tied to the LM head is
one parameter and counts once) for `finetune_steps` steps, batches cycling in a seeded
order like GA. With θ_o the weights before and θ_ft after, Δ = θ_ft − θ_o, and the result
is θ_o − τ·Δ for τ = tau, tau + tau_step, ... up to tau_max, the first τ whose model meets
the Eq. 17 MA threshold (NeuMuter B.4 uses τ = 3). No fine-tuning recipe is stated; the
defaults (10 steps, lr 3e-5, 32 samples per batch) are a short, gentle fine-tune.

Memory: θ_o is one state-dict copy of the parameters and Δ a second; the model itself holds
θ_ft, then each θ_o − τ·Δ (no second nn.Module).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lib.core.params import Count, Positive, check_ranges
from lib.methods import Inputs, Report
from lib.methods.training import adam_all, backward_mean, cycling_batches, final_ma, forgotten, nll_sum, optimise

label = "TA"  # the name every report prints
families = ("masked", "causal")
needs = ("forget",)
kind = "weights"

Weights = dict[str, Tensor]  # parameter name -> tensor (a state-dict copy, not a module)


@dataclass(frozen=True)
class Config:
    """TA hyper-parameters: the fine-tune (steps, lr, batch) and the τ schedule."""

    finetune_steps: Count = 10
    finetune_lr: Positive = 3e-5
    batch_size: Count = 32
    tau: Positive = 3.0  # NeuMuter B.4
    tau_step: Positive = 1.0
    tau_max: Positive = 10.0

    def __post_init__(self) -> None:
        """Reject values the method cannot use."""
        check_ranges(self)
        if self.tau_max < self.tau:
            raise ValueError(f"tau_max={self.tau_max!r} < tau={self.tau!r}; allowed: tau_max >= tau")


def taus(cfg: Config) -> list[float]:
    """The τ values tried, in order: tau, tau + tau_step, ... <= tau_max (tau_max itself always last)."""
    out, k = [], 0
    while cfg.tau + k * cfg.tau_step < cfg.tau_max - 1e-9:
        out.append(cfg.tau + k * cfg.tau_step)
        k += 1
    return out + [cfg.tau_max]


def snapshot(model: nn.Module) -> Weights:
    """Detached copies of every floating parameter (tied ones once), by name."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.is_floating_point()}


def finetune(model: nn.Module, inputs: Inputs, cfg: Config) -> list[float]:
    """In place: cfg.finetune_steps Adam steps of gradient descent on the forget set; the loss per step."""
    family, forget = inputs.family, inputs.forget
    order = cycling_batches(len(forget), cfg.batch_size, inputs.seed)

    def step_loss(_step: int) -> float:
        """Backpropagate the mean NLL of the next batch."""
        return backward_mean(family, forget, next(order), lambda idx: nll_sum(model, family, forget, idx))

    return optimise(model, step_loss, adam_all(model, cfg.finetune_lr), cfg.finetune_steps).loss


def task_vector(model: nn.Module, inputs: Inputs, cfg: Config) -> tuple[Weights, Weights, list[float]]:
    """Fine-tune `model` in place; return (θ_o, Δ = θ_ft − θ_o, fine-tune losses)."""
    theta_o = snapshot(model)
    losses = finetune(model, inputs, cfg)
    params = dict(model.named_parameters())
    delta = {n: params[n].detach() - theta_o[n] for n in theta_o}
    return theta_o, delta, losses


def apply_task_vector(model: nn.Module, theta_o: Weights, delta: Weights, tau: float) -> None:
    """In place: every parameter in θ_o becomes θ_o − τ·Δ."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, base in theta_o.items():
            params[n].copy_(base - tau * delta[n])


def run(model: nn.Module, inputs: Inputs, cfg: Config) -> Report:
    """Negate the fine-tuned task vector with rising τ until every forget sample meets the stop threshold, or tau_max.

    Without a stop threshold (a fixed-strength run) only τ = cfg.tau is applied.
    """
    theta_o, delta, losses = task_vector(model, inputs, cfg)
    history: dict[str, list[float]] = {"tau": [], "max_ma": []}
    for tau in taus(cfg) if inputs.stop is not None else [cfg.tau]:
        apply_task_vector(model, theta_o, delta, tau)
        done, worst = forgotten(model, inputs)
        history["tau"].append(tau)
        history["max_ma"].append(worst)
        if done:
            break
    trainable = sum(t.numel() for t in theta_o.values())
    return Report(reached=done if inputs.stop is not None else None, strength=tau, strength_name="tau",
                  steps=cfg.finetune_steps, trainable=trainable,
                  details={"ma": final_ma(model, inputs), "history": history, "finetune_loss": losses,
                           "optimizer": "adam", "finetune_lr": cfg.finetune_lr})
