"""Data-parallel fine-tuning (compute.processes): 2 torchrun ranks over gloo on the CPU equal one process."""
from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from lib.core.finetune import MlmConfig, TrainConfig
from lib.core.models import ComputeConfig, load_model
from lib.families.causal import Sequences
from tasks.parallel import TrainingSet, train_model
from tests.tiny_models import save_tiny_bert_checkpoint, save_tiny_causal_checkpoint

CPU = ComputeConfig(device="cpu", threads=1)


def _rows(n: int, length: int, vocab: int, seed: int) -> Sequences:
    """n random token rows of one length (equal lengths: each rank's mean is over the same token count)."""
    rng = random.Random(seed)
    ids = tuple(tuple(rng.randrange(1000, vocab) for _ in range(length)) for _ in range(n))
    return Sequences(ids, (None,) * n)


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of every parameter."""
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def test_two_gloo_ranks_train_the_causal_lm_as_one_process_does(tmp_path: Path) -> None:
    """Same start, same seeded order: the 2-rank run's weights and losses match the 1-process run's."""
    folder = save_tiny_causal_checkpoint(tmp_path / "tiny")
    one, tokenizer = load_model(str(folder), "causal", compute=CPU)
    two, _ = load_model(str(folder), "causal", compute=CPU)
    start = _weights(one)
    data = TrainingSet.causal(_rows(12, 9, tokenizer.vocab_size, 0), tokenizer.pad_token_id)
    cfg = TrainConfig(epochs=2, batch_size=4, learning_rate=5e-3, warmup_fraction=0.0, seed=3)
    log_one = train_model(one, tokenizer, data, cfg, CPU)
    log_two = train_model(two, tokenizer, data, cfg, ComputeConfig(device="cpu", threads=1, processes=2))
    assert log_one.steps == log_two.steps == 6 and (log_one.ranks, log_two.ranks) == (1, 2)
    assert log_two.epoch_losses == pytest.approx(log_one.epoch_losses, rel=1e-4)
    moved = max((one_p - start[k]).abs().max().item() for k, one_p in one.named_parameters())
    gap = max((p - dict(one.named_parameters())[k]).abs().max().item() for k, p in two.named_parameters())
    assert moved > 1e-3  # training changed the weights, so equality below says something
    assert gap < 1e-3 * moved, (gap, moved)  # float reduction order differs between the runs, nothing else


def test_two_ranks_fine_tune_a_masked_lm_and_lower_its_loss(tmp_path: Path) -> None:
    """The masked family goes through the same ranks: weights come back changed and the loss falls."""
    folder = save_tiny_bert_checkpoint(tmp_path / "bert")
    model, tokenizer = load_model(str(folder), "masked", compute=CPU)
    start = _weights(model)
    texts = ["call me at five five five one two three four"] * 12
    cfg = MlmConfig(epochs=4, batch_size=4, learning_rate=5e-3, mask_prob=0.3, max_len=16, seed=0)
    log = train_model(model, tokenizer, TrainingSet.masked(texts), cfg, ComputeConfig(device="cpu", processes=2))
    assert log.steps > 0 and log.epoch_losses[-1] < log.epoch_losses[0]
    assert any(not torch.equal(p, start[k]) for k, p in model.named_parameters())
    assert not model.training


def test_processes_must_be_a_positive_integer() -> None:
    """A bad rank count names the value and what is allowed."""
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="processes="):
            ComputeConfig(processes=bad)

