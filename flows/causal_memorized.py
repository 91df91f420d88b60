"""DVC stage causal_memorized: MA / EL_n of every candidate and of held-out text; choose D_f (Eq. 17)."""
from __future__ import annotations

import random

from prefect import flow, get_run_logger

import lib.causal.batching
import lib.causal.memorization
from flows.causal_bag import CORPUS, FINETUNED, MEMORIZED, METRICS, candidates, encode_candidates, encode_texts
from flows.cli import params_path, run_stage
from lib.causal.batching import Sequences
from lib.io import file_digest, json_digest, write_json, write_jsonl
from lib.params import CausalMemorizedParams, load_params
from tasks.causal import load_causal_task, memorization_task
from tasks.common import code_digest, make_token, set_threads


def scores_of(model, seqs: Sequences, pad_id: int, digest: str, n: int, max_new: int | None, batch_size: int) -> dict:
    """Cached MA / EL_n / span scores of `seqs` under the model with content digest `digest`."""
    token = make_token(model=digest, seqs=json_digest([seqs.ids, seqs.spans]), n=n, max_new=max_new,
                       code=code_digest(lib.causal.memorization, lib.causal.batching))
    return memorization_task(model, seqs, pad_id, n, True, max_new, batch_size, cache_token=token)


def choose(ids: list[str], scores: dict, limits: dict[str, float], cfg: CausalMemorizedParams) -> list[str]:
    """Seeded draw of n_forget candidates whose MA exceeds the threshold by `margin` and EL exceeds its threshold."""
    eligible = [i for i, ma, el in zip(ids, scores["ma"], scores["el"])
                if ma >= limits["ma"] + cfg.margin and el > limits["el"]]
    if len(eligible) < cfg.n_forget:
        raise ValueError(f"only {len(eligible)} of {len(ids)} candidates are memorized above the thresholds "
                         f"(MA > {limits['ma']:.3f} + margin {cfg.margin}, EL > {limits['el']:.3f}); "
                         f"causal.memorized.n_forget = {cfg.n_forget} needs more: fine-tune longer or add copies")
    return sorted(random.Random(cfg.seed).sample(eligible, cfg.n_forget), key=ids.index)


def mean_finite(values: list[float] | None) -> float | None:
    """Mean of the non-NaN values; None when there are none (JSON has no NaN)."""
    kept = [v for v in values or [] if v == v]
    return sum(kept) / len(kept) if kept else None


@flow(name="causal-memorized")
def memorized_flow(params_file: str = "params.yaml") -> dict:
    """Score candidates and held-out text; thresholds = held-out means (Eq. 17); draw D_f."""
    causal = load_params(params_file).causal
    cfg, max_len = causal.memorized, causal.data.max_len
    model, tokenizer = load_causal_task(str(FINETUNED))
    digest, pad_id = file_digest(FINETUNED / "model.safetensors"), tokenizer.pad_token_id
    rows = candidates()
    cand = scores_of(model, encode_candidates(tokenizer, rows, max_len), pad_id, digest, cfg.el_n, cfg.el_max_new, cfg.batch_size)
    held = scores_of(model, encode_texts(tokenizer, CORPUS / "valid.jsonl", max_len, cfg.n_valid), pad_id, digest,
                     cfg.el_n, cfg.el_max_new, cfg.batch_size)
    limits = {"ma": mean_finite(held["ma"]), "el": mean_finite(held["el"])}
    ids = [c.id for c in rows]
    forget = choose(ids, cand, limits, cfg)
    write_jsonl(MEMORIZED / "scores.jsonl", ({"id": i, **{k: v[n] for k, v in cand.items()}} for n, i in enumerate(ids)))
    write_json(MEMORIZED / "forget.json", {"ids": forget, "thresholds": limits})
    index = [ids.index(i) for i in forget]
    metrics = {"thresholds": limits, "n_candidates": len(ids), "n_forget": len(forget), "n_valid": len(held["ma"]),
               "forget": {k: mean_finite([cand[k][i] for i in index]) for k in cand},
               "candidates": {k: mean_finite(cand[k]) for k in cand},
               "valid": {k: mean_finite(held[k]) for k in held if mean_finite(held[k]) is not None}}
    write_json(METRICS / "memorized.json", metrics)
    get_run_logger().info("D_f: %d of %d candidates; thresholds MA %.3f EL %.3f", len(forget), len(ids),
                          limits["ma"], limits["el"])
    return metrics


if __name__ == "__main__":
    set_threads()
    run_stage(memorized_flow, params_path())
