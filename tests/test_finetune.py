"""Masked-LM fine-tuning: masking rules, determinism, and that training learns."""
from __future__ import annotations

from pathlib import Path

import torch

from lib.core.finetune import MlmConfig, TrainLog, train
from lib.core.models import load_model
from lib.families.masked import mask_tokens, mlm_batch_loss, special_mask, tokenize_texts
from tests.tiny_models import save_tiny_bert_checkpoint

TEXTS = ["the gas desk meets on monday .", "please call me at 5 5 5 1 2 3 4 5 6 7 ."] * 4


def config(**changes) -> MlmConfig:
    """A small recipe."""
    values = dict(epochs=3, batch_size=4, learning_rate=3e-3, weight_decay=0.0, warmup_fraction=0.1,
                  mask_prob=0.3, max_len=16, seed=0)
    values.update(changes)
    return MlmConfig(**values)


def train_masked_lm(model, tok, texts, cfg: MlmConfig) -> TrainLog:
    """Masked fine-tuning through the shared loop (what the finetune stage runs)."""
    n, loss = mlm_batch_loss(model, tok, texts, cfg)
    return train(model, n, loss, cfg)


def test_long_texts_become_chunks_with_special_tokens(tmp_path: Path) -> None:
    _, tok = load_model(str(save_tiny_bert_checkpoint(tmp_path / "m")), "masked")
    chunks = tokenize_texts(tok, ["word " * 30], max_len=16)
    assert len(chunks) == 3 and all(len(c) <= 16 for c in chunks)
    assert all(c[0] == tok.cls_token_id and c[-1] == tok.sep_token_id for c in chunks)


def test_masking_never_touches_special_tokens(tmp_path: Path) -> None:
    _, tok = load_model(str(save_tiny_bert_checkpoint(tmp_path / "m")), "masked")
    ids = torch.tensor([[tok.cls_token_id, 2000, 2001, 2002, tok.sep_token_id, tok.pad_token_id]] * 50)
    special = special_mask(ids, tok)
    inputs, labels = mask_tokens(ids, special, tok, 0.9, torch.Generator().manual_seed(0))
    assert (labels[special] == -100).all() and torch.equal(inputs[special], ids[special])
    assert (labels[~special] != -100).float().mean() > 0.8


def test_training_is_seeded_and_lowers_the_loss(tmp_path: Path) -> None:
    path = str(save_tiny_bert_checkpoint(tmp_path / "m"))
    runs = []
    for _ in range(2):
        model, tok = load_model(path, "masked")
        log = train_masked_lm(model, tok, TEXTS, config())
        runs.append((log, model.state_dict()["bert.encoder.layer.0.output.dense.weight"].clone()))
    assert runs[0][0].epoch_losses == runs[1][0].epoch_losses
    assert torch.equal(runs[0][1], runs[1][1])
    assert runs[0][0].epoch_losses[-1] < runs[0][0].epoch_losses[0]
    assert runs[0][0].final_loss == runs[0][0].epoch_losses[-1] and len(runs[0][0].epoch_losses) == 3
    assert not model.training
