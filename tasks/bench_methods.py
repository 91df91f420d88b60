"""A method's unlearning of a benchmark run, shared by the stages that run it (bench_unlearn scores it, bench_attack
attacks it): its params and its inputs."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from transformers import PreTrainedModel

from lib.bench.qa import encode_pairs_file
from lib.bench.suites import BenchConfig, run_suite
from lib.core.io import MissingInput, read_json, read_jsonl
from lib.core.params import Natural, NonEmpty
from lib.core.statistics import NeuronsConfig
from lib.families.causal import CausalFamily, of
from lib.methods import STATISTICS, Inputs, Outcome, Stats, get, make_config
from tasks import load_model_task
from tasks.bench import suite_config
from tasks.statistics import causal_statistics
from tasks.tracking import MlflowConfig
from tasks.unlearn import unlearn_task


def require_run(bench: BenchConfig, run: str, models: Sequence[Path]) -> None:
    """The run is one of benchmarks.runs and its `models` are saved; else one line naming what to run first."""
    if run not in bench.runs:
        raise ValueError(f"benchmark run {run!r} is not in benchmarks.runs; allowed: {', '.join(bench.runs)}")
    for folder in models:
        if not (folder / "model.safetensors").is_file():
            raise MissingInput(f"{folder}/model.safetensors not found; allowed: run the benchmark track first "
                               f"(`dvc repro bench_prepare@{run}`)")


def method_config(params: Any, run: str, method: str) -> dict[str, Any]:
    """What unlearning `method` on `run` reads from params: `benchmarks`, the run's suite, the method's Config (bad
    values fail before any work), the neurons' statistics, seed, MLflow, and the hash of the params behind it."""
    section = params.get(f"benchmarks.methods.{method}")
    return {"bench": params.get("benchmarks", BenchConfig), "suite": suite_config(params, run),
            "seed": params.get("seed", Natural), "mlflow": params.get("mlflow", MlflowConfig),
            "model": params.get("causal.model", NonEmpty), "section": section,
            "neurons": params.get("benchmarks.neurons", NeuronsConfig),
            "method": make_config(method, section, where=f"benchmarks.methods.{method}"),
            "params_hash": params.fingerprint("seed", f"benchmarks.methods.{method}", "benchmarks.batch_size",
                                              "benchmarks.neurons", f"benchmarks.{run_suite(run)[0]}", "causal.model")}


def bench_inputs(model: Any, tokenizer: Any, run: str, cfg: dict[str, Any], needs: tuple[str, ...], sets_dir: Path,
                 prepared: Path, finetuned: Path) -> Inputs:
    """D_f, D_r, NeuMuter's neighbours, the stop threshold and (for a neuron method) D_f's statistics on the saved
    fine-tuned model of a run (`prepared`: bench_prepare's folder of the run)."""
    max_len = cfg["suite"].max_len
    near = [tokenizer(r["text"], add_special_tokens=False)["input_ids"][:max_len]
            for r in read_jsonl(prepared / "neighbours.jsonl")]
    family = CausalFamily(tokenizer, cfg["bench"].batch_size)
    forget = encode_pairs_file(tokenizer, sets_dir / run / "forget.jsonl", max_len)
    stats = causal_statistics(model, finetuned, family, forget, cfg["neurons"], run) \
        if set(STATISTICS) & set(needs) else Stats()
    return Inputs(family=family, forget=forget, neighbours=of(near), stats=stats,
                  retain=encode_pairs_file(tokenizer, sets_dir / run / "retain.jsonl", max_len),
                  stop=read_json(prepared / "thresholds.json")["ma"], seed=cfg["seed"])


def run_inputs(run: str, method: str, cfg: dict[str, Any], sets_dir: Path, prepared: Path,
               finetuned: Path) -> tuple[PreTrainedModel, Any, Inputs]:
    """The run's fine-tuned model (saved in `finetuned`), its tokenizer and what `method` reads of the run, seeded
    as every stage that unlearns on the run seeds it."""
    model, tokenizer = load_model_task(str(finetuned), "causal")
    torch.manual_seed(cfg["seed"])
    return model, tokenizer, bench_inputs(model, tokenizer, run, cfg, tuple(get(method).needs), sets_dir, prepared,
                                          finetuned)


def unlearn_run(run: str, method: str, cfg: dict[str, Any], sets_dir: Path, prepared: Path,
                finetuned: Path) -> tuple[PreTrainedModel, Any, Outcome]:
    """The run's fine-tuned model unlearned by `method` here: (model, tokenizer, outcome); the same code, inputs and
    seed give the same model in every stage that calls it."""
    model, tokenizer, inputs = run_inputs(run, method, cfg, sets_dir, prepared, finetuned)
    return model, tokenizer, unlearn_task(method, run, model, inputs, cfg["method"], k_max=cfg["neurons"].k_max)
