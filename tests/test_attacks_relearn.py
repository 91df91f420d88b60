"""Relearning: a tiny model that forgot its texts by gradient ascent learns the held-out half's siblings back from
20 steps on the other half (below the NLL of a model that never saw them), while that never-trained reference
learns nothing about them from the same steps; the attacked model itself is left unchanged."""
from __future__ import annotations

import copy

import pytest
import torch

from lib.attacks.relearn import RelearnConfig, relearn
from lib.deletion.patch import model_digest
from lib.families.causal import nll_batch_loss, of, sequence_nll
from tests.tiny_models import memorise_ffn, tiny_llama


def gradient_ascent(model: torch.nn.Module, forget, until: float) -> torch.nn.Module:
    """SGD ascent on the forget set's NLL until its mean exceeds `until` (a copy)."""
    model = copy.deepcopy(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    loss = nll_batch_loss(model, forget, 0)
    for _ in range(400):
        optimizer.zero_grad()
        (-loss(list(range(len(forget.ids))))).backward()
        optimizer.step()
        if float(sequence_nll(model, forget, 0).mean()) > until:
            model.zero_grad(set_to_none=True)
            return model.eval()
    raise AssertionError("gradient ascent did not forget")


def test_relearning_brings_back_what_gradient_ascent_hid() -> None:
    torch.manual_seed(0)
    rows = torch.randint(3, 90, (8, 10), generator=torch.Generator().manual_seed(2)).tolist()
    forget, held, rest = of(rows), of(rows[:4]), of(rows[4:])
    unlearned = gradient_ascent(memorise_ffn(tiny_llama(seed=0), forget), forget, until=5.0)
    reference = tiny_llama(seed=0).eval()  # the retrained reference: it never held these texts
    cfg = RelearnConfig(steps=(5, 10, 20), learning_rate=3e-4, batch_size=4, seed=0)
    measure = lambda m: {"rest_nll": float(sequence_nll(m, rest, 0).mean())}  # noqa: E731
    digest = model_digest(unlearned)
    attacked = relearn(unlearned, lambda m: nll_batch_loss(m, held, 0), 4, cfg, measure)
    baseline = relearn(reference, lambda m: nll_batch_loss(m, held, 0), 4, cfg, measure)
    assert [r["steps"] for r in attacked] == [0, 5, 10, 20]
    assert model_digest(unlearned) == digest  # the attacker trained a copy
    base = baseline[0]["rest_nll"]
    assert attacked[0]["rest_nll"] > base  # forgotten: the rest is no likelier than for a model that never saw it
    assert attacked[-1]["rest_nll"] < base - 0.3, attacked  # ... until 20 steps on the other half bring it back
    assert all(r["rest_nll"] > base - 0.05 for r in baseline), baseline  # the reference has nothing to recover


def test_relearn_config_checks() -> None:
    with pytest.raises(ValueError, match="increasing integers"):
        RelearnConfig(steps=(10, 5))
    with pytest.raises(ValueError, match="learning_rate=0.0 invalid; allowed: a finite number > 0"):
        RelearnConfig(learning_rate=0.0)
