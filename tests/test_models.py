"""Model loading: embedded names, local folders, and clear errors for other families."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lib.core.models import load_model, resolve_model_source
from tests.tiny_models import save_tiny_bert_checkpoint, tiny_gpt2


def test_embedded_name_resolves_to_the_packaged_folder() -> None:
    folder = Path(resolve_model_source("embedded:minilm"))
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def test_unknown_embedded_name_lists_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown embedded model 'embedded:nope'; allowed: embedded:minilm, "
                                         r"embedded:smollm2"):
        resolve_model_source("embedded:nope")


def test_causal_lm_is_rejected_by_the_masked_lm_loader(tmp_path: Path) -> None:
    tiny_gpt2().save_pretrained(tmp_path / "gpt2")
    with pytest.raises(ValueError, match="model_type 'gpt2'; masked LM families allowed: .*bert"):
        load_model(str(tmp_path / "gpt2"), "masked")


def test_local_checkpoint_loads_in_eval_mode(tmp_path: Path) -> None:
    model, tokenizer = load_model(str(save_tiny_bert_checkpoint(tmp_path / "bert")), "masked")
    assert not model.training
    assert tokenizer.mask_token == "[MASK]"


def _save_causal_tokenizer(source: str, out: Path, offline: bool) -> bytes:
    """Load a causal tokenizer and save it in a fresh process (the hub mode is read at import)."""
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    code = ("import sys; from lib.core.models import load_tokenizer; "
            "load_tokenizer(sys.argv[1]).save_pretrained(sys.argv[2])")
    subprocess.run([sys.executable, "-c", code, source, str(out)], check=True, env=env, cwd=Path(__file__).parents[1])
    return (out / "tokenizer_config.json").read_bytes()


def test_saved_causal_tokenizer_is_the_same_with_or_without_hf_hub_offline(tmp_path: Path) -> None:
    # dvc.lock hashes saved checkpoints: a config that followed the shell's hub mode would make every causal
    # and benchmark stage look changed on a machine that sets HF_HUB_OFFLINE differently
    online = _save_causal_tokenizer("embedded:smollm2", tmp_path / "online", offline=False)
    assert online == _save_causal_tokenizer("embedded:smollm2", tmp_path / "offline", offline=True)
    assert json.loads(online)["local_files_only"] is True
    # a saved folder (a fine-tuned checkpoint) reloads as a local folder and saves the same config
    assert _save_causal_tokenizer(str(tmp_path / "online"), tmp_path / "again", offline=False) == online
