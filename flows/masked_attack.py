"""DVC stages `masked_attack@<method>` and `masked_attack_retrain`: every attack of lib.attacks.audit on the masked
track's models, one category at a time (each method's edited model of that category; the retrained model, which
never saw any planted secret, is the reference): 8/4-bit rounding, top-k candidates, logit lens through the MLM
head, the category's other templates, relearning on half of the secrets or on the validation texts only (never
trained, secret-free: the unrelated attacker), membership against the controls."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from prefect import flow, get_run_logger

from flows import CORPUS, EDITED, FINETUNED, MEMORIZED, METRICS, RETRAINED, main
from lib.attacks.audit import AttacksConfig, flat_metrics
from lib.attacks.masked import MaskedProbe
from lib.core.io import MissingInput, write_json
from lib.core.params import Count, Natural, load_params
from lib.data.records import PipelineConfig, memorized_records, read_documents, read_secrets
from lib.families.masked import MaskedRows
from lib.families.masked_retain import RetainConfig, retain_rows, secret_free
from lib.methods import get
from tasks import load_model_task, use_compute
from tasks.attacks import attack_task, reference_stats
from tasks.tracking import MlflowConfig, log_run_task

ATTACKS = METRICS / "attacks" / "masked"
REFERENCE = "retrain"


def model_path(name: str, category: str) -> Path:
    """The model `name` holds for `category`: a method's edited model, or the retrained reference."""
    return RETRAINED if name == REFERENCE else EDITED / name / category


def config(name: str, params_file: str) -> dict[str, Any]:
    """The stage's params and inputs checked before any work: `attacks`, the categories, every model folder."""
    params = load_params(params_file)
    pipeline = params.get("pipeline", PipelineConfig)
    if name != REFERENCE:
        get(name)  # an unknown name lists the registered methods; one the pipeline did not run has no model below
    for folder in {model_path(name, c) for c in pipeline.categories} | {FINETUNED, RETRAINED}:
        if not (folder / "model.safetensors").is_file():
            raise MissingInput(f"{folder}/model.safetensors not found; allowed: run the masked track first "
                               f"(`dvc repro evaluate`)")
    return {"attacks": params.get("attacks", AttacksConfig), "mlflow": params.get("mlflow", MlflowConfig),
            "categories": pipeline.categories, "retain": params.get("retain", RetainConfig),
            "seed": params.get("seed", Natural), "max_len": params.get("memorized.max_len", Count)}


def unrelated_rows(tokenizer: Any, cfg: dict[str, Any]) -> MaskedRows:
    """The unrelated relearning attacker's data: the validation texts (never trained; those holding a planted or
    control secret left out), masked at random as the retain set is (params `retain`)."""
    secrets = [s.secret for s in read_secrets(CORPUS / "secrets.jsonl") + read_secrets(CORPUS / "controls.jsonl")]
    texts = secret_free([d.text for d in read_documents(CORPUS / "valid.jsonl")], secrets)
    return retain_rows(tokenizer, texts, cfg["retain"], cfg["max_len"])


def category_attack(name: str, category: str, cfg: dict[str, Any]) -> dict[str, Any] | None:
    """Every attack on the model of `name` for one category; None when the category memorized no secret."""
    records = memorized_records(MEMORIZED / "memorized.json", CORPUS / "secrets.jsonl", category)
    if not records:
        return None
    controls = [c for c in read_secrets(CORPUS / "controls.jsonl") if c.category == category]
    model, tokenizer = load_model_task(str(model_path(name, category)), "masked")
    reference = model if name == REFERENCE else load_model_task(str(RETRAINED), "masked")[0]
    parent = load_model_task(str(FINETUNED), "masked")[0]
    probe = MaskedProbe(tokenizer, records, controls, cfg["attacks"], cfg["max_len"], unrelated_rows(tokenizer, cfg))
    torch.manual_seed(cfg["seed"])
    result = attack_task(f"{name}-{category}", model, reference_stats(reference, RETRAINED, probe, category), parent,
                         probe, cfg["attacks"])
    log_run_task(cfg["mlflow"], f"attack-masked-{name}-{category}", {"method": name, "category": category,
                                                                       "stage": "attack", "track": "masked"},
                 {**vars(cfg["attacks"]), "n_forget": len(records)}, flat_metrics(result))
    return {"n_forget": len(records), "n_controls": len(controls), **result}


@flow(name="masked-attack")
def attack_flow(name: str, params_file: str = "params.yaml") -> dict[str, Any]:
    """Every attack on one model of the masked track, per category; numbers only to metrics/attacks/masked/."""
    use_compute(params_file)
    cfg = config(name, params_file)
    started, out = time.perf_counter(), {}
    for category in cfg["categories"]:
        row = category_attack(name, category, cfg)
        if row is not None:
            out[category] = row
            get_run_logger().info("%s %s: span MA %.3f, %s %.3f, lens best top-1 %.3f, MIA AUC (loss) %.3f", name,
                                  category, row["direct"]["span_ma"], "privacy", row["direct"]["privacy"],
                                  row["logit_lens"]["best_top1"], row["mia"]["auc_loss"])
    result = {"model": name, **out, "seconds": round(time.perf_counter() - started, 1)}
    write_json(ATTACKS / f"{name}.json", result)
    return result


if __name__ == "__main__":
    main(attack_flow, check=config)
