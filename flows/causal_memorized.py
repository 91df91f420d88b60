"""DVC stage `causal_memorized`: MA / EL_n of every candidate and of held-out text; choose D_f (Eq. 17)."""
from __future__ import annotations

from prefect import flow, get_run_logger

from flows import CAUSAL_CORPUS, CAUSAL_FINETUNED, CAUSAL_MEMORIZED, CAUSAL_METRICS, main
from lib.core.io import file_digest, read_jsonl, write_json, write_jsonl
from lib.core.params import Count, load_params
from lib.data.records import read_candidates
from lib.families.causal import encode_all
from lib.families.memorization import ForgetSetConfig, choose_forget_set, mean_finite
from tasks import compute_record, load_model_task, shared, use_compute
from tasks.causal import memorization_scores


def config(params_file: str) -> tuple[ForgetSetConfig, int]:
    """The stage's params: `causal.memorized` and `causal.data.max_len`."""
    params = load_params(params_file)
    return params.get("causal.memorized", ForgetSetConfig), params.get("causal.data.max_len", Count)


@flow(name="causal-memorized")
def memorized_flow(params_file: str = "params.yaml") -> dict:
    """Score candidates and held-out text; thresholds = held-out means (Eq. 17); draw D_f."""
    use_compute(params_file)
    cfg, max_len = config(params_file)
    model, tokenizer = load_model_task(str(CAUSAL_FINETUNED), "causal")
    ref = shared(model, CAUSAL_FINETUNED, "causal", file_digest(CAUSAL_FINETUNED / "model.safetensors"))
    pad_id, rows = tokenizer.pad_token_id, read_candidates(CAUSAL_CORPUS / "candidates.jsonl")
    scoring = (cfg.el_n, cfg.el_max_new, cfg.batch_size, cfg.decode_batch_size, cfg.shard_size)
    cand = memorization_scores(ref, encode_all(tokenizer, [(c.text, c.secret) for c in rows], max_len), pad_id,
                               *scoring, label="candidates")
    valid = [(r["text"], None) for r in read_jsonl(CAUSAL_CORPUS / "valid.jsonl")[: cfg.n_valid]]
    if not valid:
        raise ValueError(f"{CAUSAL_CORPUS / 'valid.jsonl'} holds no texts")
    held = memorization_scores(ref, encode_all(tokenizer, valid, max_len), pad_id, *scoring, label="valid")
    limits = {"ma": mean_finite(held["ma"]), "el": mean_finite(held["el"])}
    ids = [c.id for c in rows]
    forget = choose_forget_set(ids, cand["ma"], cand["el"], limits, cfg)
    write_jsonl(CAUSAL_MEMORIZED / "scores.jsonl",
                ({"id": i, **{k: v[n] for k, v in cand.items()}} for n, i in enumerate(ids)))
    write_json(CAUSAL_MEMORIZED / "forget.json", {"ids": forget, "thresholds": limits})
    index = [ids.index(i) for i in forget]
    metrics = {"thresholds": limits, "n_candidates": len(ids), "n_forget": len(forget), "n_valid": len(held["ma"]),
               "forget": {k: mean_finite([cand[k][i] for i in index]) for k in cand},
               "candidates": {k: mean_finite(cand[k]) for k in cand},
               "valid": {k: mean_finite(held[k]) for k in held if mean_finite(held[k]) is not None},
               "compute": compute_record(model)}
    write_json(CAUSAL_METRICS / "memorized.json", metrics)
    get_run_logger().info("D_f: %d of %d candidates; thresholds MA %.3f EL %.3f", len(forget), len(ids),
                          limits["ma"], limits["el"])
    return metrics


if __name__ == "__main__":
    main(memorized_flow, check=config)
