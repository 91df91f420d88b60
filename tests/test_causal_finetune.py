"""Causal-LM fine-tuning: it learns, epochs=0 is a no-op, it is seeded; copy expansion and config checks."""
from __future__ import annotations

import pytest
import torch

from lib.core.finetune import OnStep, TrainConfig, TrainLog, train
from lib.families.causal import Sequences, accuracy, expand_copies, nll_batch_loss, of
from tests.tiny_models import tiny_gpt2

pytestmark = pytest.mark.usefixtures("one_thread")

SEQS = of([[5, 17, 33, 8, 61, 42, 9, 77, 23, 14], [90, 3, 51, 12, 70, 28]], [(3, 6), None])
PAD = 0


def config(**changes) -> TrainConfig:
    """A short, fast recipe (lr 1e-2) changed by `changes`."""
    base = dict(epochs=8, batch_size=2, learning_rate=1e-2, weight_decay=0.0, warmup_fraction=0.0, seed=0)
    return TrainConfig(**{**base, **changes})


def train_causal_lm(model: torch.nn.Module, seqs: Sequences, pad_id: int, cfg: TrainConfig,
                    on_step: OnStep | None = None) -> TrainLog:
    """Causal-LM fine-tuning as the causal_finetune stage runs it: mean next-token NLL per batch."""
    return train(model, len(seqs), nll_batch_loss(model, seqs, pad_id), cfg, on_step=on_step)


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of every parameter."""
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def test_training_lowers_loss_and_raises_accuracy() -> None:
    model = tiny_gpt2()
    before = accuracy(model, SEQS, PAD)
    steps = []
    log = train_causal_lm(model, SEQS, PAD, config(), on_step=lambda s, t, loss: steps.append((s, t, loss)))
    after = accuracy(model, SEQS, PAD)
    assert log.steps == 8 and len(log.epoch_losses) == 8
    assert [s for s, _, _ in steps] == list(range(1, 9)) and {t for _, t, _ in steps} == {8}
    assert log.epoch_losses[-1] < 0.8 * log.epoch_losses[0]
    assert float(after.mean()) > float(before.mean()) + 0.3
    assert not model.training  # back in eval mode


def test_steps_per_epoch_round_up() -> None:
    seqs = expand_copies(SEQS, [2, 3])  # 5 sequences, batches of 2 -> 3 steps per epoch
    log = train_causal_lm(tiny_gpt2(), seqs, PAD, config(epochs=2))
    assert log.steps == 6 and len(log.epoch_losses) == 2


def test_zero_epochs_keeps_parameters_bit_identical() -> None:
    model = tiny_gpt2()
    before = weights(model)
    log = train_causal_lm(model, SEQS, PAD, config(epochs=0))
    assert log.steps == 0 and log.epoch_losses == ()
    for name, value in model.named_parameters():
        assert torch.equal(value, before[name]), name


def test_same_seed_same_weights_other_seed_differs() -> None:
    runs = []
    for seed in (3, 3, 4):
        model = tiny_gpt2()  # dropout is active while training: the seed must fix it too
        train_causal_lm(model, SEQS.subset([0, 1, 0]), PAD, config(epochs=2, seed=seed))
        runs.append(weights(model))
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not all(torch.equal(runs[0][k], runs[2][k]) for k in runs[0])


def test_empty_corpus_is_an_error_unless_no_epochs() -> None:
    empty = of([])
    with pytest.raises(ValueError, match="no training items"):
        train_causal_lm(tiny_gpt2(), empty, PAD, config(epochs=1))
    assert train_causal_lm(tiny_gpt2(), empty, PAD, config(epochs=0)).steps == 0


def test_expand_copies_order() -> None:
    out = expand_copies(SEQS, [2, 3])
    assert out.ids == (SEQS.ids[0],) * 2 + (SEQS.ids[1],) * 3
    assert out.spans == ((3, 6), (3, 6), None, None, None)
    assert expand_copies(SEQS, [1, 1]) == SEQS


@pytest.mark.parametrize("copies", [[1], [1, 1, 1], [1, 0], [2, -1]])
def test_expand_copies_errors(copies) -> None:
    with pytest.raises(ValueError, match="copies must give one count >= 1"):
        expand_copies(SEQS, copies)


@pytest.mark.parametrize("changes, fragment", [
    (dict(epochs=-1), "epochs=-1"), (dict(batch_size=0), "batch_size=0"), (dict(learning_rate=0.0), "learning_rate=0.0"),
    (dict(learning_rate=float("nan")), "learning_rate=nan"), (dict(warmup_fraction=1.5), "warmup_fraction=1.5"),
    (dict(warmup_fraction=-0.1), "warmup_fraction=-0.1"),
])
def test_config_validation(changes, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        config(**changes)


def test_config_accepts_edges() -> None:
    assert config(epochs=0, warmup_fraction=1.0).warmup_fraction == 1.0
