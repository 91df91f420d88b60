"""DVC stages `activations`, `attribution`, `clustering`, `ig`: per-category neuron statistics.

Each is computed shard by shard (or layer block) by content-cached Prefect tasks whose
results live in .cache/ (not a DVC output), so a killed run resumes at the next shard;
the flow always rewrites its DVC outputs from those results.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from prefect import flow, get_run_logger

import lib.adapter
import lib.attribution
import lib.ig
import lib.masking
import lib.methods.snku
import lib.clustering
from flows.bag import MODEL, bag_rows, shards
from flows.cli import params_path, run_stage
from lib.io import file_digest, json_digest, load_tensors, save_tensors, write_json
from lib.masking import MaskedRows, iter_chunks, take
from lib.params import load_params, section
from tasks.common import code_digest, make_token, set_threads
from tasks.models import load_model_task
from tasks.neurons import activations_shard_task, attribution_shard_task, cluster_task, ig_shard_task, run_cached

ACTIVATIONS, ATTRIBUTION, CLUSTERS = Path("data/activations"), Path("data/attribution"), Path("data/clusters")
IG = Path("data/ig")


def _rows_token(rows: lib.masking.MaskedRows) -> str:
    """Content digest of a shard's rows."""
    return json_digest([rows.input_ids.tolist(), rows.positions.tolist(), rows.gold_ids.tolist()])


def shard_stats(kind: str, task_fn, model, model_digest: str, rows: MaskedRows, shard_size: int,
                label: str) -> tuple[list[torch.Tensor], float]:
    """One content-cached task per shard of `rows`: the shards' results and their compute seconds."""
    code, parts, seconds = code_digest(lib.adapter, lib.attribution), [], 0.0
    for i, shard in enumerate(shards(rows, shard_size)):
        token = make_token(kind=kind, model=model_digest, rows=_rows_token(shard), code=code)
        value, spent = run_cached(task_fn, model, shard, label=f"{label}-{i:03d}", cache_token=token)
        parts.append(value)
        seconds += spent
    return parts, seconds


def _sharded(kind: str, task_fn, max_len: int, shard_size: int, categories: list[str]) -> dict[str, dict]:
    """Run a per-shard task over every category's bag; returns stacked results and seconds."""
    set_threads()
    model, tokenizer = load_model_task(str(MODEL))
    out, digest = {}, file_digest(MODEL)
    for cat in categories:
        parts, seconds = shard_stats(kind, task_fn, model, digest, bag_rows(tokenizer, cat, max_len), shard_size, cat)
        out[cat] = {"parts": parts, "seconds": seconds}
        get_run_logger().info("%s %s: %d shards, %.1f s of compute", kind, cat, len(parts), seconds)
    return out


def by_record(rows: MaskedRows) -> list[MaskedRows]:
    """The rows of each record, in order: IG is cached per secret, so any subset of secrets reuses it."""
    # each record trimmed to its own length: the cache key must not depend on the other records' padding
    return [next(iter_chunks(take(rows, (rows.record_index == r).nonzero().flatten()), len(rows)))
            for r in rows.record_index.unique().tolist()]


def ig_stats(model, model_digest: str, rows: MaskedRows, cfg: lib.ig.IGConfig, label: str) -> tuple[torch.Tensor, float]:
    """IG (R, L, d_ff) of `rows` in their order, one cached task per record, and its compute seconds."""
    code, seconds = code_digest(lib.adapter, lib.attribution, lib.ig), 0.0
    parts: dict[int, torch.Tensor] = {}
    for shard in by_record(rows):
        record = int(shard.record_index[0])
        token = make_token(kind="ig", model=model_digest, rows=_rows_token(shard), cfg=repr(cfg), code=code)
        parts[record], spent = run_cached(ig_shard_task, model, shard, cfg, label=f"{label}-r{record:03d}",
                                          cache_token=token)
        seconds += spent
    # secret_token_rows lays rows out grouped by record in record order, so concatenation restores it
    return torch.cat([parts[r] for r in rows.record_index.unique().tolist()]), seconds


@flow(name="activations")
def activations_flow(params_file: str = "params.yaml") -> None:
    """Cache FFN activations (N, L, d_ff) of each category's memorized bag."""
    params = load_params(params_file)
    results = _sharded("activations", activations_shard_task, params.memorized.max_len,
                       params.attribution.shard_size, params.pipeline.categories)
    for cat, res in results.items():
        save_tensors(ACTIVATIONS / f"{cat}.safetensors", {"activations": torch.cat(res["parts"])},
                     meta={"seconds": f"{res['seconds']:.6f}"})


@flow(name="attribution")
def attribution_flow(params_file: str = "params.yaml") -> None:
    """Grad x Act attribution (L, d_ff) of each category's memorized bag, one cached task per shard."""
    params = load_params(params_file)
    results = _sharded("attribution", attribution_shard_task, params.memorized.max_len,
                       params.attribution.shard_size, params.pipeline.categories)
    for cat, res in results.items():
        save_tensors(ATTRIBUTION / f"{cat}.safetensors", {"attribution": torch.stack(res["parts"]).sum(0)},
                     meta={"seconds": f"{res['seconds']:.6f}"})


@flow(name="clustering")
def clustering_flow(params_file: str = "params.yaml") -> None:
    """Per-layer correlation clustering of each category's neurons."""
    set_threads()
    params = load_params(params_file)
    cfg, code = params.clustering, code_digest(lib.clustering, lib.methods.snku)
    for cat in params.pipeline.categories:
        path = ACTIVATIONS / f"{cat}.safetensors"
        acts = load_tensors(path)["activations"]
        token = make_token(acts=file_digest(path), threshold=cfg.threshold, linkage=cfg.linkage, code=code)
        labels, seconds = run_cached(cluster_task, acts, cfg.threshold, cfg.linkage, label=cat, cache_token=token)
        save_tensors(CLUSTERS / f"{cat}.safetensors", {"labels": labels}, meta={"seconds": f"{seconds:.6f}"})
        get_run_logger().info("clusters %s: %s per layer", cat, [int(l.max()) + 1 for l in labels])


@flow(name="ig")
def ig_flow(params_file: str = "params.yaml") -> None:
    """Integrated Gradients (R, L, d_ff) of every memorized secret token, one cached task per secret."""
    set_threads()
    params = load_params(params_file)
    cfg = lib.ig.IGConfig(**section(params, "ig"))
    model, tokenizer = load_model_task(str(MODEL))
    digest = file_digest(MODEL)
    for cat in params.pipeline.categories:
        rows = bag_rows(tokenizer, cat, params.memorized.max_len)
        scores, seconds = ig_stats(model, digest, rows, cfg, cat)
        save_tensors(IG / f"{cat}.safetensors", {"ig": scores, "record_index": rows.record_index},
                     meta={"seconds": f"{seconds:.6f}"})
        get_run_logger().info("ig %s: %d rows, %.1f s of compute", cat, len(rows), seconds)


STAGES = {"activations": activations_flow, "attribution": attribution_flow, "clustering": clustering_flow,
          "ig": ig_flow}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in STAGES:
        print(f"usage: python -m flows.neurons {{{'|'.join(STAGES)}}}", file=sys.stderr)
        sys.exit(2)
    run_stage(STAGES[sys.argv[1]], params_path())
