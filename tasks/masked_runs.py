"""What the masked track's in-memory runs share (the experiments and calibrate stages): the fine-tuned model with
its scores before editing and the retrained reference's, each run's inputs (the cached statistics, or a forget
subset's, computed by the same content-cached tasks) and one run = one content-cached edit + evaluation
(tasks.experiments.experiment_task) turned into a flat record."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

import tasks.experiments
from flows import CORPUS, FINETUNED, MEMORIZED, RETRAINED, STATS
from lib.core.attribution import AttributionConfig
from lib.core.clustering import ClusterConfig
from lib.core.ig import IGConfig
from lib.core.io import file_digest, json_digest, tensors_digest
from lib.core.metrics import forget_gap
from lib.core.params import NonEmpty, Params
from lib.data.records import SecretRecord, memorized_records, read_documents
from lib.families.masked import PRIVACY_METRIC, EvaluateConfig, MaskedFamily, MaskedRows, secret_token_rows
from lib.families.masked_retain import RetainConfig
from lib.families.memorized import MemorizedConfig
from lib.methods import Inputs, get
from lib.reports.experiments import Spec, forget_split
from tasks import code_digest, load_model_task, make_token, shared
from tasks.edit import counterpart_rows, masked_inputs, masked_retain
from tasks.experiments import experiment_task
from tasks.scoring import model_scores
from tasks.statistics import forget_statistics
from tasks.tracking import MlflowConfig


@dataclass(frozen=True)
class Settings:
    """The params sections the runs read."""

    categories: tuple[str, ...]
    seesaw_seed: int  # the seeded forget / keep split of seesaw runs
    memorized: MemorizedConfig
    evaluate: EvaluateConfig
    attribution: AttributionConfig
    clustering: ClusterConfig
    ig: IGConfig
    mlflow: MlflowConfig
    retain: RetainConfig
    model: str
    sections: dict[str, Any]  # methods.<name> of every method a run edits with

    @classmethod
    def read(cls, params: Params, categories: Sequence[str], sections: dict[str, Any],
             seesaw_seed: int = 0) -> "Settings":
        """The sections every run reads, from params; the caller's categories, method sections and (seesaw runs
        only) the forget / keep split's seed."""
        return cls(tuple(categories), seesaw_seed, params.get("memorized", MemorizedConfig),
                   params.get("evaluate", EvaluateConfig), params.get("attribution", AttributionConfig),
                   params.get("clustering", ClusterConfig), params.get("ig", IGConfig),
                   params.get("mlflow", MlflowConfig), params.get("retain", RetainConfig),
                   params.get("finetune.model", NonEmpty), sections)


@dataclass
class Context:
    """What every run shares: the base model, its scores before editing, the retrain reference's, the retain rows."""

    cfg: Settings
    base: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    digest: str
    valid_texts: list[str]
    records: dict[str, list[SecretRecord]]
    before: dict[str, tuple[float, dict[str, float]]]
    retrain: dict[str, tuple[float, dict[str, float]]]
    inputs: dict[tuple[str, tuple[str, ...]], Inputs]
    retain: MaskedRows  # D_r of the methods that read one (params `retain`)


def _scores_by_id(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, digest: str,
                  records: list[SecretRecord], ctx_cfg: Settings, texts: list[str]) -> tuple[float, dict[str, float]]:
    """Validation PPL and {record id: score} of one model (cached like the evaluate stage)."""
    ppl, scores = model_scores(model, tokenizer, digest, records, texts, ctx_cfg.evaluate, ctx_cfg.memorized.max_len)
    return ppl, dict(zip([r.id for r in records], scores))


def make_context(cfg: Settings) -> Context:
    """Load the fine-tuned and retrained models and score both on every category."""
    base, tokenizer = load_model_task(str(FINETUNED), "masked")
    retrained, _ = load_model_task(str(RETRAINED), "masked")
    digest, r_digest = file_digest(FINETUNED), file_digest(RETRAINED)
    records = {c: memorized_records(MEMORIZED / "memorized.json", CORPUS / "secrets.jsonl", c)
               for c in cfg.categories}
    texts = [d.text for d in read_documents(CORPUS / "valid.jsonl")][: cfg.evaluate.max_valid_texts]
    return Context(cfg, base, tokenizer, digest, texts, records,
                   {c: _scores_by_id(base, tokenizer, digest, r, cfg, texts) for c, r in records.items()},
                   {c: _scores_by_id(retrained, tokenizer, r_digest, r, cfg, texts) for c, r in records.items()}, {},
                   masked_retain(tokenizer, CORPUS, cfg.retain, cfg.memorized.max_len))


def inputs_digest(inputs: Inputs, needs: tuple[str, ...]) -> str:
    """Content digest of what a method reads (so new IG never invalidates SNKU's runs)."""
    stats, tensors = inputs.stats, {}
    for name in ("attribution", "activations", "ig"):
        if name in needs and getattr(stats, name) is not None:
            tensors[name] = getattr(stats, name)
    if "ig" in needs and stats.ig_owner is not None:
        tensors["ig_owner"] = stats.ig_owner
    if "clusters" in needs and stats.clusters is not None:
        tensors["labels"] = torch.as_tensor(np.stack(list(stats.clusters.values())))
    for name, prefix in (("forget", ""), ("retain", "retain."), ("neighbours", "neighbours.")):  # forget: the
        rows = getattr(inputs, name)  # keys of the runs cached before retain and neighbours were inputs here
        if name in needs and rows is not None:
            tensors.update({f"{prefix}rows": rows.input_ids, f"{prefix}positions": rows.positions,
                            f"{prefix}index": rows.record_index})
    records = [r.to_dict() for r in inputs.records] if "records" in needs else []
    return json_digest([tensors_digest(tensors), json_digest(records)])


def subset_inputs(ctx: Context, category: str, forget: list[SecretRecord]) -> Inputs:
    """A forget subset's inputs, its statistics from the same content-cached shard and per-secret tasks."""
    cfg, label = ctx.cfg, f"seesaw-{category}"
    rows = secret_token_rows(ctx.tokenizer, forget, cfg.memorized.max_len)
    ref = shared(ctx.base, FINETUNED, "masked", ctx.digest)
    stats = forget_statistics(ref, rows, rows.record_index, rows, rows.record_index, cfg.clustering, cfg.ig,
                              cfg.attribution.shard_size, label)
    family = MaskedFamily(ctx.tokenizer, cfg.memorized.batch_size, cfg.memorized.max_len)
    return Inputs(family=family, forget=rows, records=tuple(forget), stats=stats, retain=ctx.retain,
                  neighbours=counterpart_rows(ctx.tokenizer, forget, rows, 0, cfg.memorized.max_len))


def inputs_for(ctx: Context, spec: Spec) -> tuple[Inputs, str, list[str]]:
    """Memoized inputs of a run (seed set per run), the method's inputs digest, the forgotten ids."""
    records = ctx.records[spec.category]
    forget = records if spec.forget_fraction is None else forget_split(
        records, spec.forget_fraction, ctx.cfg.seesaw_seed)[0]
    key = (spec.category, tuple(r.id for r in forget))
    if key not in ctx.inputs:
        ctx.inputs[key] = (masked_inputs(ctx.tokenizer, forget, STATS, spec.category, ctx.cfg.memorized.max_len,
                                         ctx.cfg.memorized.batch_size, 0, ("retain", "neighbours"), ctx.retain)
                           if spec.forget_fraction is None else subset_inputs(ctx, spec.category, forget))
    inputs = ctx.inputs[key]
    digest = inputs_digest(inputs, get(spec.method).needs)
    return dataclasses.replace(inputs, seed=spec.seed), digest, list(key[1])


def _mean(scores: dict[str, float], ids: list[str]) -> float | None:
    """Mean score over `ids`, None when there are none."""
    return sum(scores[i] for i in ids) / len(ids) if ids else None


def make_record(ctx: Context, spec: Spec, result: dict[str, Any], forget: list[str], upstream: float) -> dict[str, Any]:
    """One flat experiments record (the schema lib.reports.masked reads)."""
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
            "kept_privacy_before": _mean(before, kept),
            # the retrain reference never saw the kept secrets either (it drops every memorized secret):
            # its score on them is what a model that never memorized them gives
            "retrain_kept_privacy": _mean(retrain, kept)}


def run_token(ctx: Context, spec: Spec, digest: str) -> str:
    """Cache key of a run: the content of everything it reads."""
    cfg = ctx.cfg
    return make_token(model=ctx.digest, method=spec.method, section=cfg.sections[spec.method],
                      category=spec.category, seed=spec.seed, overrides=list(spec.overrides), inputs=digest,
                      evaluate=dataclasses.asdict(cfg.evaluate), texts=json_digest(ctx.valid_texts),
                      max_len=cfg.memorized.max_len, records=[r.id for r in ctx.records[spec.category]],
                      code=code_digest(get(spec.method), tasks.experiments))


def run_spec(ctx: Context, spec: Spec) -> tuple[dict[str, Any] | str, bool]:
    """Run (or fetch from cache) one spec: (its record, True when newly computed), or (the reason the method
    rejected its config, False)."""
    inputs, digest, forget = inputs_for(ctx, spec)
    cfg = ctx.cfg
    state = experiment_task(ctx.base, ctx.tokenizer, spec.method, cfg.sections[spec.method], spec.category, inputs,
                            dict(spec.overrides), ctx.valid_texts, ctx.records[spec.category], cfg.evaluate,
                            cfg.memorized.max_len, label=spec.label, cache_token=run_token(ctx, spec, digest),
                            return_state=True)
    if state.is_failed():  # e.g. SNKU's filtered clusters hold fewer neurons than a swept K
        return str(state.message).removeprefix("Task run encountered an exception "), False
    upstream = sum(inputs.stats.seconds.get(n, 0.0) for n in get(spec.method).needs)
    return make_record(ctx, spec, state.result(), forget, upstream), state.name != "Cached"
