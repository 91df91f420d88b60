"""DVC stage `causal_unlearn@<method>`: unlearn D_f from the fine-tuned causal LM with one method, save the result."""
from __future__ import annotations

from typing import Any

import torch
from prefect import flow, get_run_logger

from flows import CAUSAL_CORPUS, CAUSAL_FINETUNED, CAUSAL_MEMORIZED, NEIGHBOURS, UNLEARNED, main
from lib.core.io import read_json, read_jsonl, write_json
from lib.core.params import Count, Natural, load_params
from lib.data.records import forget_candidates
from lib.families.causal import CausalFamily, Sequences, encode_all, of
from lib.core.statistics import NeuronsConfig
from lib.methods import STATISTICS, Inputs, Stats, check_track, get, make_config
from tasks import load_model_task, save_model_task, use_compute
from tasks.statistics import causal_statistics
from tasks.unlearn import unlearn_task


def runs(method: str) -> list[str]:
    """Modules the stage imports by name for its argument (read by the dvc.yaml deps generator)."""
    return [get(method).__name__]


def config(method: str, params_file: str) -> dict[str, Any]:
    """The stage's params, the method's Config built (a bad value fails before any work)."""
    check_track(method, "causal.pipeline", "causal", statistics=True)  # an unknown name lists the registered methods
    params = load_params(params_file)
    section = params.get(f"causal.methods.{method}")
    return {"seed": params.get("seed", Natural), "max_len": params.get("causal.data.max_len", Count),
            "batch_size": params.get("causal.memorized.batch_size", Count),
            "retain_samples": params.get("causal.retain_samples", Count), "section": section,
            "neurons": params.get("causal.neurons", NeuronsConfig),
            "method": make_config(method, section, where=f"causal.methods.{method}")}


def retain_sequences(tokenizer: Any, max_len: int, n: int) -> Sequences:
    """D_r: the first `n` background (secret-free) training emails; public text for dumps."""
    rows = [r for r in read_jsonl(CAUSAL_CORPUS / "train.jsonl") if not r["secret"]]
    rows = rows or read_jsonl(CAUSAL_CORPUS / "public.jsonl")  # a JSONL / TDEC dump brings no training text
    return encode_all(tokenizer, [(r["text"], None) for r in rows[:n]], max_len)


def causal_inputs(model: Any, tokenizer: Any, cfg: dict[str, Any], needs: tuple[str, ...]) -> Inputs:
    """D_f, its neighbours, D_r, the Eq. 17 MA threshold and (for a neuron method) D_f's statistics."""
    candidates = forget_candidates(CAUSAL_CORPUS / "candidates.jsonl", CAUSAL_MEMORIZED / "forget.json")
    near = [tokenizer(r["text"], add_special_tokens=False)["input_ids"][: cfg["max_len"]]
            for r in read_jsonl(NEIGHBOURS / "neighbours.jsonl")]
    family = CausalFamily(tokenizer, cfg["batch_size"])
    forget = encode_all(tokenizer, [(c.text, c.secret) for c in candidates], cfg["max_len"])
    stats = causal_statistics(model, CAUSAL_FINETUNED, family, forget, cfg["neurons"], "D_f") \
        if set(STATISTICS) & set(needs) else Stats()
    return Inputs(family=family, forget=forget, neighbours=of(near), stats=stats,
                  retain=retain_sequences(tokenizer, cfg["max_len"], cfg["retain_samples"]),
                  stop=read_json(CAUSAL_MEMORIZED / "forget.json")["thresholds"]["ma"], seed=cfg["seed"])


@flow(name="causal-unlearn")
def unlearn_flow(method: str, params_file: str = "params.yaml") -> dict:
    """Unlearn D_f from the fine-tuned model with one method and save the edited model."""
    use_compute(params_file)
    cfg = config(method, params_file)
    model, tokenizer = load_model_task(str(CAUSAL_FINETUNED), "causal")
    torch.manual_seed(cfg["seed"])
    inputs = causal_inputs(model, tokenizer, cfg, tuple(get(method).needs))
    outcome = unlearn_task(method, "D_f", model, inputs, cfg["method"], k_max=cfg["neurons"].k_max)
    seconds = outcome.seconds
    save_model_task(model, tokenizer, UNLEARNED / method)
    report = outcome.report
    out = {"method": method, "reached": report.reached, "strength": report.strength,
           "strength_name": report.strength_name, "steps": report.steps, "trainable": report.trainable,
           "changed": outcome.changed, "total": outcome.total, "details": report.details,
           "seconds": round(seconds, 2), "config": cfg["section"]}
    write_json(UNLEARNED / method / "report.json", out)
    get_run_logger().info("%s: reached=%s %s=%s in %.1f s, %d of %d parameters changed", method, report.reached,
                          report.strength_name, report.strength, seconds, outcome.changed, outcome.total)
    return out


if __name__ == "__main__":
    main(unlearn_flow, check=config)
