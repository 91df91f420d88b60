"""DVC stages `causal_attack@<method>` and `causal_attack_reference@<original|retrain>`: every attack of
lib.attacks.audit on one causal-track model (relearning, 8/4-bit rounding, sampling, logit lens, membership
inference, paraphrased prompts), D_f and the held-out texts as the track scores them, the retrained model as the
reference."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from prefect import flow, get_run_logger

from flows import (CAUSAL_CORPUS, CAUSAL_FINETUNED, CAUSAL_MEMORIZED, CAUSAL_METRICS, CAUSAL_RETRAINED, METRICS,
                   UNLEARNED, main)
from lib.attacks.audit import AttacksConfig, flat_metrics
from lib.attacks.causal import CausalProbe
from lib.core.io import read_jsonl, write_json
from lib.core.params import Count, Natural, load_params
from lib.data.paraphrase import paraphrased_texts
from lib.data.records import forget_candidates
from lib.families.causal import CausalFamily, encode_all
from lib.methods import get
from tasks import load_model_task, use_compute
from tasks.attacks import attack_task, reference_stats
from tasks.causal_inputs import require_reference
from tasks.tracking import MlflowConfig, log_run_task

ATTACKS = METRICS / "attacks" / "causal"
REFERENCES = {"original": CAUSAL_FINETUNED, "retrain": CAUSAL_RETRAINED}  # the rows beside the methods


def model_path(name: str) -> Path:
    """Where the model `name` is: a registered method's unlearned model, or a reference row.

    Not causal.pipeline's check: a stage param that only validates would rerun every attack when a method is
    added; a method the pipeline did not run has no unlearned model, which `config` reports."""
    if name in REFERENCES:
        return REFERENCES[name]
    get(name)  # an unknown name lists the registered methods
    return UNLEARNED / name


def config(name: str, params_file: str) -> dict[str, Any]:
    """The stage's params and inputs checked before any work: the `attacks` section, the model's folder, the
    retrained reference (membership and every "recovered" number are read against it)."""
    params = load_params(params_file)
    path = model_path(name)
    require_reference((path, CAUSAL_FINETUNED, CAUSAL_RETRAINED), CAUSAL_METRICS / "retrain.json", "the attacks",
                      "causal_evaluate")
    return {"attacks": params.get("attacks", AttacksConfig), "mlflow": params.get("mlflow", MlflowConfig), "path": path, "seed": params.get("seed", Natural),
            "max_len": params.get("causal.data.max_len", Count), "n_valid": params.get("causal.memorized.n_valid", Count),
            "batch_size": params.get("causal.memorized.batch_size", Count)}


@flow(name="causal-attack")
def attack_flow(name: str, params_file: str = "params.yaml") -> dict[str, Any]:
    """Every attack on one model of the causal track; numbers only to metrics/attacks/causal/<name>.json."""
    use_compute(params_file)
    cfg = config(name, params_file)
    started = time.perf_counter()
    model, tokenizer = load_model_task(str(cfg["path"]), "causal")
    reference = model if name == "retrain" else load_model_task(str(CAUSAL_RETRAINED), "causal")[0]
    parent = model if name == "original" else load_model_task(str(CAUSAL_FINETUNED), "causal")[0]
    members = forget_candidates(CAUSAL_CORPUS / "candidates.jsonl", CAUSAL_MEMORIZED / "forget.json")
    held = [r["text"] for r in read_jsonl(CAUSAL_CORPUS / "valid.jsonl")[: cfg["n_valid"]]]
    forget = encode_all(tokenizer, [(c.text, c.secret) for c in members], cfg["max_len"])
    holdout = encode_all(tokenizer, [(text, None) for text in held], cfg["max_len"])
    per_secret = cfg["attacks"].paraphrases
    rewritten = [(text, c.secret) for c in members
                 for text in paraphrased_texts(c.category, c.text, c.secret)[:per_secret]]
    probe = CausalProbe(forget, holdout, ([c.text for c in members], held),
                        encode_all(tokenizer, rewritten, cfg["max_len"]) if rewritten else None,
                        CausalFamily(tokenizer, cfg["batch_size"]), cfg["attacks"])
    torch.manual_seed(cfg["seed"])
    result = attack_task(name, model, reference_stats(reference, CAUSAL_RETRAINED, probe, name), parent, probe,
                         cfg["attacks"])
    out = {"model": name, "n_forget": len(forget), "n_holdout": len(holdout), **result,
           "seconds": round(time.perf_counter() - started, 1)}
    write_json(ATTACKS / f"{name}.json", out)
    log_run_task(cfg["mlflow"], f"attack-causal-{name}", {"method": name, "category": "causal", "stage": "attack",
                                                           "track": "causal"},
                 {**vars(cfg["attacks"]), "n_forget": len(forget)}, flat_metrics(result))
    get_run_logger().info("%s: span MA %.3f, leak %s, lens best top-1 %.3f, MIA AUC (loss) %.3f in %.0f s", name,
                          result["direct"]["span_ma"], result["sampling"], result["logit_lens"]["best_top1"],
                          result["mia"]["auc_loss"], out["seconds"])
    return out


if __name__ == "__main__":
    main(attack_flow, check=config)
