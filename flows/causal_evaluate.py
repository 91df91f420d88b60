"""DVC stage causal_evaluate@<method>: MA, EL_n, loss MIA, two perplexities, cost, an extraction example."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from prefect import flow, get_run_logger

import lib.causal.batching
import lib.causal.metrics
from flows.causal_bag import (CORPUS, FINETUNED, METRICS, RETRAINED, UNLEARNED, encode_candidates, encode_texts,
                              forget_candidates, thresholds)
from flows.causal_memorized import mean_finite, scores_of
from flows.cli import params_path, run_stage
from lib.causal.batching import Sequences
from lib.causal.methods import CAUSAL_METHODS, get_causal_method
from lib.causal.extraction import private_safe_example
from lib.causal.metrics import histogram, mia_distances
from lib.io import file_digest, json_digest, read_json, write_json
from lib.params import Params, load_params, section
from tasks.causal import load_causal_task, nll_task, perplexity_task
from tasks.common import code_digest, make_token, set_threads
from tasks.tracking import log_run_task

MIA_BINS, MIA_RANGE = 20, (0.0, 5.0)


def _nll(model, seqs: Sequences, pad_id: int, digest: str, batch_size: int) -> list[float]:
    """Cached mean token NLL per sequence."""
    token = make_token(model=digest, seqs=json_digest(seqs.ids), code=code_digest(lib.causal.batching))
    return nll_task(model, seqs, pad_id, batch_size, cache_token=token)


def _ppl(model, seqs: Sequences, pad_id: int, digest: str, batch_size: int) -> float:
    """Cached token-weighted perplexity."""
    token = make_token(model=digest, seqs=json_digest(seqs.ids), code=code_digest(lib.causal.metrics))
    return perplexity_task(model, seqs, pad_id, batch_size, cache_token=token)


def model_metrics(path: Path, params: Params) -> dict[str, Any]:
    """Every metric of one model on D_f, held-out emails and public-domain text (each part cached)."""
    causal, ev = params.causal, params.causal.evaluate
    model, tokenizer = load_causal_task(str(path))
    digest, pad_id, max_len = file_digest(path / "model.safetensors"), tokenizer.pad_token_id, causal.data.max_len
    forget = encode_candidates(tokenizer, forget_candidates(), max_len)
    valid = encode_texts(tokenizer, CORPUS / "valid.jsonl", max_len, causal.memorized.n_valid)
    public = encode_texts(tokenizer, CORPUS / "public.jsonl", max_len)
    mem = scores_of(model, forget, pad_id, digest, ev.el_n, ev.el_max_new, ev.batch_size)
    mia = mia_distances(*(torch.tensor(_nll(model, s, pad_id, digest, ev.batch_size)) for s in (forget, valid)))
    limits = thresholds()
    forgotten = [ma <= limits["ma"] and el <= limits["el"] for ma, el in zip(mem["ma"], mem["el"])]
    return {"ma": mean_finite(mem["ma"]), "el": mean_finite(mem["el"]), "span_ma": mean_finite(mem["span_ma"]),
            "span_el": mean_finite(mem["span_el"]), "span_exact": mean_finite(mem["span_exact"]),
            "forgotten_frac": sum(forgotten) / len(forgotten), "mia_distance": float(mia.mean()),
            "ppl_valid": _ppl(model, valid, pad_id, digest, ev.batch_size),
            "ppl_public": _ppl(model, public, pad_id, digest, ev.batch_size),
            "mia_histogram": histogram(mia, MIA_BINS, MIA_RANGE), "mia_distances": [float(x) for x in mia],
            "example": _example(model, tokenizer, ev.example_tokens, ev.log_private_text)}


def _example(model, tokenizer, n_tokens: int, allow: bool) -> dict[str, Any]:
    """Greedy continuation of the first forget sample's text up to its secret (no text unless allowed)."""
    first = forget_candidates()[0]
    cut = first.text.find(first.secret) if first.secret else len(first.text) // 2
    secrets = [c.secret for c in forget_candidates() if c.secret]
    return private_safe_example(model, tokenizer, first.text[:cut].rstrip(), first.text[cut:], n_tokens, secrets,
                                allow) | {"sample": first.id}


SCALARS = ("ma", "el", "span_ma", "span_el", "span_exact", "forgotten_frac", "mia_distance", "ppl_valid", "ppl_public")


@flow(name="causal-evaluate")
def evaluate_flow(name: str, params_file: str = "params.yaml") -> dict:
    """Score the unlearned model beside the original and the retrained reference; log to MLflow."""
    params = load_params(params_file)
    report = read_json(UNLEARNED / name / "report.json")
    rows = {"original": model_metrics(FINETUNED, params), name: model_metrics(UNLEARNED / name, params)}
    if read_json(METRICS / "retrain.json").get("trained"):
        rows["retrain"] = model_metrics(RETRAINED, params)
    cost = {"time_s": report["seconds"], "changed_frac": report["changed"] / report["total"],
            "trainable_frac": report["trainable"] / report["total"], "reached": float(report["reached"]),
            "strength": float(report["strength"])}
    out = {"method": name, "strength_name": report["strength_name"], "thresholds": thresholds(),
           "n_forget": len(forget_candidates()), **cost, "models": rows}
    write_json(METRICS / f"{name}.json", out)
    metrics = {**{k: rows[name][k] for k in SCALARS}, **cost,
               **{f"original_{k}": rows["original"][k] for k in SCALARS}}
    tags = {"method": name, "category": "causal", "stage": "causal_evaluate", "track": "causal",
            "model": params.causal.model, "params_hash": json_digest(section(params, "causal"))[:12]}
    log_run_task(params.mlflow, f"causal-{name}", tags,
                 section(params, f"causal.methods.{name}"), metrics,
                 {"mia_histogram.json": rows[name]["mia_histogram"], "example.json": rows[name]["example"]})
    get_run_logger().info("%s: MA %.3f EL %.3f MIA %.3f PPL %.2f / %.2f", name, rows[name]["ma"], rows[name]["el"],
                          rows[name]["mia_distance"], rows[name]["ppl_valid"], rows[name]["ppl_public"])
    return out


if __name__ == "__main__":
    set_threads()
    arg = sys.argv[1] if len(sys.argv) == 2 else ""
    if arg not in CAUSAL_METHODS:
        print(f"usage: python -m flows.causal_evaluate {{{'|'.join(CAUSAL_METHODS)}}}", file=sys.stderr)
        sys.exit(2)
    run_stage(evaluate_flow, arg, params_path(), check=lambda: get_causal_method(arg))
