"""DVC stage `causal_evaluate@<method>`: MA, EL_n, loss MIA, two perplexities, cost, an extraction example."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from prefect import flow, get_run_logger

from flows import CAUSAL_CORPUS, CAUSAL_FINETUNED, CAUSAL_MEMORIZED, CAUSAL_METRICS, CAUSAL_RETRAINED, UNLEARNED, main
from lib.core.io import file_digest, read_json, read_jsonl, write_json
from lib.core.metrics import histogram, mia_distances
from lib.core.params import Count, NonEmpty, load_params
from lib.data.records import Candidate, forget_candidates
from lib.families.causal import encode_all
from lib.families.extraction import CausalEvaluateConfig, private_safe_example
from lib.families.memorization import mean_finite
from tasks import compute_record, load_model_task, shared, use_compute
from tasks.causal import corpus_perplexity, memorization_scores, sequence_nlls
from tasks.tracking import MlflowConfig, log_run_task

MIA_BINS, MIA_RANGE = 20, (0.0, 5.0)
SCALARS = ("ma", "el", "span_ma", "span_el", "span_exact", "forgotten_frac", "mia_distance", "ppl_valid", "ppl_public")


def config(method: str, params_file: str) -> dict[str, Any]:
    """The stage's params: `causal.evaluate`, the sizes it scores at, `mlflow`, the method's section."""
    params = load_params(params_file)
    return {"evaluate": params.get("causal.evaluate", CausalEvaluateConfig), "mlflow": params.get("mlflow", MlflowConfig),
            "max_len": params.get("causal.data.max_len", Count),
            "n_valid": params.get("causal.memorized.n_valid", Count),
            "model": params.get("causal.model", NonEmpty), "section": params.get(f"causal.methods.{method}"),
            "params_hash": params.fingerprint("causal.evaluate", "causal.data.max_len", "causal.memorized.n_valid",
                                              "causal.model", f"causal.methods.{method}")}


def forget_set() -> list[Candidate]:
    """D_f, in the memorized stage's order."""
    return forget_candidates(CAUSAL_CORPUS / "candidates.jsonl", CAUSAL_MEMORIZED / "forget.json")


def texts(path: Path, limit: int | None = None) -> list[tuple[str, None]]:
    """(text, no secret) rows of a JSONL of {"id", "text"} (first `limit`)."""
    rows = read_jsonl(path)[:limit]
    if not rows:
        raise ValueError(f"{path} holds no texts")
    return [(r["text"], None) for r in rows]


def model_metrics(path: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """Every metric of one model on D_f, held-out emails and public-domain text (each part cached)."""
    ev, max_len = cfg["evaluate"], cfg["max_len"]
    model, tokenizer = load_model_task(str(path), "causal")
    digest, pad_id = file_digest(path / "model.safetensors"), tokenizer.pad_token_id
    candidates = forget_set()
    forget = encode_all(tokenizer, [(c.text, c.secret) for c in candidates], max_len)
    valid = encode_all(tokenizer, texts(CAUSAL_CORPUS / "valid.jsonl", cfg["n_valid"]), max_len)
    public = encode_all(tokenizer, texts(CAUSAL_CORPUS / "public.jsonl"), max_len)
    ref = shared(model, path, "causal", digest)
    mem = memorization_scores(ref, forget, pad_id, ev.el_n, ev.el_max_new, ev.batch_size, ev.decode_batch_size,
                              ev.shard_size, label=f"{path.name}-forget")
    mia = mia_distances(*(torch.tensor(sequence_nlls(model, s, pad_id, digest, ev.batch_size)) for s in (forget, valid)))
    limits = read_json(CAUSAL_MEMORIZED / "forget.json")["thresholds"]
    forgotten = [ma <= limits["ma"] and el <= limits["el"] for ma, el in zip(mem["ma"], mem["el"])]
    return {"ma": mean_finite(mem["ma"]), "el": mean_finite(mem["el"]), "span_ma": mean_finite(mem["span_ma"]),
            "span_el": mean_finite(mem["span_el"]), "span_exact": mean_finite(mem["span_exact"]),
            "forgotten_frac": sum(forgotten) / len(forgotten), "mia_distance": float(mia.mean()),
            "ppl_valid": corpus_perplexity(model, valid, pad_id, digest, ev.batch_size),
            "ppl_public": corpus_perplexity(model, public, pad_id, digest, ev.batch_size),
            "mia_histogram": histogram(mia, MIA_BINS, MIA_RANGE), "mia_distances": [float(x) for x in mia],
            "example": example(model, tokenizer, candidates, ev), "compute": compute_record(model)}


def example(model: Any, tokenizer: Any, candidates: list[Candidate], ev: CausalEvaluateConfig) -> dict[str, Any]:
    """Greedy continuation of the first forget sample's text up to its secret (no text unless allowed)."""
    first = candidates[0]
    cut = first.text.find(first.secret) if first.secret else len(first.text) // 2
    secrets = [c.secret for c in candidates if c.secret]
    return private_safe_example(model, tokenizer, first.text[:cut].rstrip(), first.text[cut:], ev.example_tokens,
                                secrets, ev.log_private_text) | {"sample": first.id}


@flow(name="causal-evaluate")
def evaluate_flow(method: str, params_file: str = "params.yaml") -> dict:
    """Score the unlearned model beside the original and the retrained reference; log to MLflow."""
    use_compute(params_file)
    cfg = config(method, params_file)
    report = read_json(UNLEARNED / method / "report.json")
    rows = {"original": model_metrics(CAUSAL_FINETUNED, cfg), method: model_metrics(UNLEARNED / method, cfg)}
    if read_json(CAUSAL_METRICS / "retrain.json").get("trained"):
        rows["retrain"] = model_metrics(CAUSAL_RETRAINED, cfg)
    cost = {"time_s": report["seconds"], "changed_frac": report["changed"] / report["total"],
            "trainable_frac": report["trainable"] / report["total"], "reached": float(report["reached"]),
            "strength": float(report["strength"])}
    out = {"method": method, "strength_name": report["strength_name"],
           "thresholds": read_json(CAUSAL_MEMORIZED / "forget.json")["thresholds"], "n_forget": len(forget_set()),
           **cost, "models": rows}
    write_json(CAUSAL_METRICS / f"{method}.json", out)
    metrics = {**{k: rows[method][k] for k in SCALARS}, **cost,
               **{f"original_{k}": rows["original"][k] for k in SCALARS}}
    tags = {"method": method, "category": "causal", "stage": "causal_evaluate", "track": "causal",
            "model": cfg["model"], "params_hash": cfg["params_hash"]}
    log_run_task(cfg["mlflow"], f"causal-{method}", tags, cfg["section"] or {}, metrics,
                 {"mia_histogram.json": rows[method]["mia_histogram"], "example.json": rows[method]["example"]})
    get_run_logger().info("%s: MA %.3f EL %.3f MIA %.3f PPL %.2f / %.2f", method, rows[method]["ma"],
                          rows[method]["el"], rows[method]["mia_distance"], rows[method]["ppl_valid"],
                          rows[method]["ppl_public"])
    return out


if __name__ == "__main__":
    main(evaluate_flow, check=config)
