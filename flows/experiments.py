"""DVC stage `experiments`: the SNKU paper's tables and figures as cached in-memory runs.

Every run (lib.experiments.Spec) edits a copy of the fine-tuned model with one method and
evaluates it; its result is a Prefect task result keyed by the content of everything it
reads (model, statistics, method params, seed, evaluation params, code), so changing one
method's params re-runs only that method's runs. Full-bag runs reuse the DVC outputs of
activations / attribution / clustering / ig; seesaw runs compute the forget subset's
statistics with the same per-shard (IG: per-secret) cached tasks.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from prefect import flow, get_run_logger
from transformers import PreTrainedModel, PreTrainedTokenizerBase

import lib.adapter
import lib.clustering
import lib.editing
import lib.ig
import lib.masking
import lib.methods
import lib.privacy
import tasks.experiments
from flows.bag import CORPUS, MODEL, memorized_records
from flows.cli import params_path, run_stage
from flows.edit import STAGE_DIRS, _seconds, method_inputs
from flows.evaluate import PRIVACY_METRIC, RETRAINED, model_scores
from flows.neurons import ig_stats, shard_stats
from lib.data.corpus import read_documents
from lib.data.records import SecretRecord
from lib.experiments import Spec, experiment_specs, forget_split
from lib.gap import forget_gap
from lib.io import file_digest, json_digest, tensors_digest, write_json
from lib.masking import secret_token_rows
from lib.methods import get_method
from lib.methods.base import MethodInputs
from lib.params import Params, load_params, section
from tasks.common import code_digest, make_token, set_threads
from tasks.experiments import experiment_task
from tasks.models import load_model_task
from tasks.neurons import activations_shard_task, attribution_shard_task, cluster_task, run_cached
from tasks.tracking import log_run_task

OUT = Path("metrics/experiments.json")


@dataclass
class Context:
    """What every run shares: the base model, its scores before editing, the retrain reference's."""

    params: Params
    base: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    digest: str
    valid_texts: list[str]
    records: dict[str, list[SecretRecord]]
    before: dict[str, tuple[float, dict[str, float]]]
    retrain: dict[str, tuple[float, dict[str, float]]]
    inputs: dict[tuple[str, tuple[str, ...]], tuple[MethodInputs, dict[str, float]]]


def _scores_by_id(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, digest: str,
                  records: list[SecretRecord], params: Params) -> tuple[float, dict[str, float]]:
    """Validation PPL and {record id: score} of one model (cached like the evaluate stage)."""
    ppl, scores = model_scores(model, tokenizer, digest, records, params)
    return ppl, dict(zip([r.id for r in records], scores))


def make_context(params: Params) -> Context:
    """Load the fine-tuned and retrained models and score both on every category."""
    base, tokenizer = load_model_task(str(MODEL))
    retrained, _ = load_model_task(str(RETRAINED))
    digest, r_digest = file_digest(MODEL), file_digest(RETRAINED)
    records = {c: memorized_records(c) for c in params.pipeline.categories}
    texts = [d.text for d in read_documents(CORPUS / "valid.jsonl")][: params.evaluate.max_valid_texts]
    return Context(params, base, tokenizer, digest, texts, records,
                   {c: _scores_by_id(base, tokenizer, digest, r, params) for c, r in records.items()},
                   {c: _scores_by_id(retrained, tokenizer, r_digest, r, params) for c, r in records.items()}, {})


def _inputs_digest(inputs: MethodInputs, reads: tuple[str, ...]) -> str:
    """Content digest of the statistics a method reads (so new IG never invalidates SNKU's runs)."""
    tensors: dict[str, torch.Tensor] = {}
    if "attribution" in reads:
        tensors["attribution"] = inputs.attribution
    if "activations" in reads:
        tensors["activations"] = inputs.activations
    if "cluster_labels" in reads and inputs.cluster_labels is not None:
        tensors["labels"] = torch.as_tensor(np.stack(list(inputs.cluster_labels.values())))
    if "rows" in reads and inputs.rows is not None:
        tensors.update(rows=inputs.rows.input_ids, positions=inputs.rows.positions, index=inputs.rows.record_index)
    if "ig" in reads and inputs.ig is not None:
        tensors["ig"] = inputs.ig
    records = [r.to_dict() for r in inputs.records] if "records" in reads else []
    return json_digest([tensors_digest(tensors), json_digest(records)])


def full_inputs(ctx: Context, category: str) -> tuple[MethodInputs, dict[str, float]]:
    """The category's statistics from the DVC stage outputs, and each stage's compute seconds."""
    inputs = method_inputs(category, 0, ctx.tokenizer, ctx.params.memorized.max_len)
    return inputs, {stage: _seconds(d / f"{category}.safetensors") for stage, d in STAGE_DIRS.items()}


def subset_inputs(ctx: Context, category: str, forget: list[SecretRecord]) -> tuple[MethodInputs, dict[str, float]]:
    """Statistics of a forget subset, from the same content-cached shard and per-secret tasks."""
    p, label = ctx.params, f"seesaw-{category}"
    rows = secret_token_rows(ctx.tokenizer, forget, p.memorized.max_len)
    acts, s_act = shard_stats("activations", activations_shard_task, ctx.base, ctx.digest, rows,
                              p.attribution.shard_size, label)
    attr, s_attr = shard_stats("attribution", attribution_shard_task, ctx.base, ctx.digest, rows,
                               p.attribution.shard_size, label)
    acts_t = torch.cat(acts)
    token = make_token(acts=tensors_digest({"a": acts_t}), threshold=p.clustering.threshold,
                       linkage=p.clustering.linkage, code=code_digest(lib.clustering, lib.methods.snku))
    labels, s_clu = run_cached(cluster_task, acts_t, p.clustering.threshold, p.clustering.linkage, label=label,
                               cache_token=token)
    ig, s_ig = ig_stats(ctx.base, ctx.digest, rows, lib.ig.IGConfig(**section(p, "ig")), label)
    inputs = MethodInputs(category, torch.stack(attr).sum(0), acts_t,
                          {layer: labels[layer].numpy() for layer in range(labels.shape[0])}, 0,
                          rows=rows, ig=ig, records=tuple(forget), tokenizer=ctx.tokenizer)
    return inputs, {"activations": s_act, "attribution": s_attr, "clustering": s_clu, "ig": s_ig}


def inputs_for(ctx: Context, spec: Spec) -> tuple[MethodInputs, dict[str, float], str, list[str]]:
    """Memoized inputs of a run (seed set per run), stage seconds, the method's inputs digest, forgotten ids."""
    records = ctx.records[spec.category]
    forget = records if spec.forget_fraction is None else forget_split(
        records, spec.forget_fraction, ctx.params.experiments.seesaw.seed)[0]
    key = (spec.category, tuple(r.id for r in forget))
    if key not in ctx.inputs:
        inputs, seconds = (full_inputs(ctx, spec.category) if spec.forget_fraction is None
                           else subset_inputs(ctx, spec.category, forget))
        ctx.inputs[key] = (inputs, seconds)
    inputs, seconds = ctx.inputs[key]
    digest = _inputs_digest(inputs, get_method(spec.method).reads)
    return dataclasses.replace(inputs, seed=spec.seed), seconds, digest, list(key[1])


def _mean(scores: dict[str, float], ids: list[str]) -> float | None:
    """Mean score over `ids`, None when there are none."""
    return sum(scores[i] for i in ids) / len(ids) if ids else None


def make_record(ctx: Context, spec: Spec, result: dict[str, Any], forget: list[str], upstream: float) -> dict[str, Any]:
    """One flat experiments record (the schema lib.report reads)."""
    before_ppl, before = ctx.before[spec.category]
    retrain_ppl, retrain = ctx.retrain[spec.category]
    kept = [r.id for r in ctx.records[spec.category] if r.id not in set(forget)] if spec.forget_fraction else []
    privacy, retrain_privacy = _mean(result["scores"], forget), _mean(retrain, forget)
    return {"experiment": spec.experiment, "method": spec.method, "category": spec.category, "seed": spec.seed,
            **result["config"], "forget_fraction": spec.forget_fraction,
            "privacy_metric": PRIVACY_METRIC[spec.category], "valid_ppl": result["valid_ppl"],
            "valid_ppl_before": before_ppl, "privacy": privacy, "privacy_before": _mean(before, forget),
            "retrain_privacy": retrain_privacy, "retrain_valid_ppl": retrain_ppl,
            "forget_gap": forget_gap(PRIVACY_METRIC[spec.category], privacy, retrain_privacy),
            "time_s": result["selection_seconds"] + result["edit_seconds"] + upstream,
            "neurons_edited": result["neurons_edited"], "kept_privacy": _mean(result["scores"], kept),
            "kept_privacy_before": _mean(before, kept), "retrain_kept_privacy": None}


def run_token(ctx: Context, spec: Spec, inputs_digest: str) -> str:
    """Cache key of a run: the content of everything it reads."""
    p = ctx.params
    methods_dir = Path(lib.methods.__file__).parent
    code = json_digest([file_digest(f) for f in sorted(methods_dir.glob("*.py"))]
                       + [code_digest(lib.adapter, lib.editing, lib.clustering, lib.privacy, lib.masking,
                                      tasks.experiments)])
    return make_token(model=ctx.digest, method=spec.method, section=section(p, f"methods.{spec.method}"),
                      category=spec.category, seed=spec.seed, overrides=list(spec.overrides), inputs=inputs_digest,
                      evaluate=section(p, "evaluate"), texts=json_digest(ctx.valid_texts), max_len=p.memorized.max_len,
                      records=[r.id for r in ctx.records[spec.category]], code=code)


def log_record(params: Params, spec: Spec, record: dict[str, Any]) -> None:
    """One MLflow run per newly computed experiment run (same metric names as evaluate)."""
    metrics = {k: float(v) for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
               and k not in ("seed", "k", "sigma", "alpha", "forget_fraction")}
    knobs = {k: record[k] for k in ("k", "sigma", "alpha", "rank_by", "forget_fraction") if record.get(k) is not None}
    log_run_task(params.mlflow, spec.label,
                 tags={"method": spec.method, "category": spec.category, "stage": "experiments",
                       "experiment": spec.experiment, "privacy_metric": record["privacy_metric"]},
                 params={**knobs, "seed": spec.seed, "model": params.finetune.model}, metrics=metrics)


def run_spec(ctx: Context, spec: Spec) -> dict[str, Any] | str:
    """Run (or fetch from cache) one spec: its record, or the reason the method rejected its config."""
    inputs, seconds, digest, forget = inputs_for(ctx, spec)
    p = ctx.params
    state = experiment_task(ctx.base, ctx.tokenizer, spec.method, section(p, f"methods.{spec.method}"), inputs,
                            dict(spec.overrides), ctx.valid_texts, ctx.records[spec.category], p.evaluate,
                            p.memorized.max_len, label=spec.label, cache_token=run_token(ctx, spec, digest),
                            return_state=True)
    if state.is_failed():  # e.g. SNKU's filtered clusters hold fewer neurons than a swept K
        get_run_logger().warning("skipped %s: %s", spec.label, state.message)
        return str(state.message).removeprefix("Task run encountered an exception ")
    upstream = sum(seconds[s] for s in get_method(spec.method).selection_stages)
    record = make_record(ctx, spec, state.result(), forget, upstream)
    if state.name != "Cached":
        log_record(p, spec, record)
    return record


@flow(name="experiments")
def experiments_flow(params_file: str = "params.yaml") -> dict[str, Any]:
    """Run every experiment spec and write metrics/experiments.json."""
    set_threads()
    params = load_params(params_file)
    ctx = make_context(params)
    specs = experiment_specs(params)
    results = [(s, run_spec(ctx, s)) for s in specs]
    records = [r for _, r in results if isinstance(r, dict)]
    skipped = [{"run": s.label, "reason": r} for s, r in results if isinstance(r, str)]
    write_json(OUT, {"records": records, "skipped": skipped})
    get_run_logger().info("experiments: %d of %d runs recorded", len(records), len(specs))
    return {"records": records, "skipped": skipped}


if __name__ == "__main__":
    run_stage(experiments_flow, params_path())
