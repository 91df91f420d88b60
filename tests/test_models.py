"""Model loading: embedded names, local folders, and clear errors for other families."""
from __future__ import annotations

from pathlib import Path

import pytest

from lib.models import load_masked_lm, resolve_model_source
from tests.tiny_models import save_tiny_bert_checkpoint, tiny_gpt2


def test_embedded_name_resolves_to_the_packaged_folder() -> None:
    folder = Path(resolve_model_source("embedded:minilm"))
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def test_unknown_embedded_name_lists_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown embedded model 'embedded:nope'; allowed: \['embedded:minilm'\]"):
        resolve_model_source("embedded:nope")


def test_causal_lm_is_rejected_by_the_masked_lm_loader(tmp_path: Path) -> None:
    tiny_gpt2().save_pretrained(tmp_path / "gpt2")
    with pytest.raises(ValueError, match="model_type 'gpt2'; masked-LM families allowed"):
        load_masked_lm(str(tmp_path / "gpt2"))


def test_local_checkpoint_loads_in_eval_mode(tmp_path: Path) -> None:
    model, tokenizer = load_masked_lm(str(save_tiny_bert_checkpoint(tmp_path / "bert")))
    assert not model.training
    assert tokenizer.mask_token == "[MASK]"
