"""DVC stage `causal_retrain`: the exact-unlearning reference, the same recipe on the training text minus D_f."""
from __future__ import annotations

from prefect import flow

from flows import CAUSAL_BASE, CAUSAL_CORPUS, CAUSAL_MEMORIZED, CAUSAL_METRICS, CAUSAL_RETRAINED, main
from lib.core.finetune import TrainConfig
from lib.core.io import read_jsonl, write_json
from lib.core.params import Count, load_params
from lib.data.records import forget_candidates, without
from tasks import use_compute
from tasks.finetune import train_rows


def config(params_file: str) -> tuple[TrainConfig, int]:
    """The stage's params: `causal.finetune` and `causal.data.max_len`."""
    params = load_params(params_file)
    return params.get("causal.finetune", TrainConfig), params.get("causal.data.max_len", Count)


@flow(name="causal-retrain")
def retrain_flow(params_file: str = "params.yaml") -> dict:
    """Fine-tune as causal_finetune does, on the training text without any copy of a D_f sample."""
    use_compute(params_file)
    cfg, max_len = config(params_file)
    rows = read_jsonl(CAUSAL_CORPUS / "train.jsonl")
    forget = {c.id for c in forget_candidates(CAUSAL_CORPUS / "candidates.jsonl", CAUSAL_MEMORIZED / "forget.json")}
    kept = {r[0] for r in without([(r["id"], r["text"], r["copies"]) for r in rows], forget)} if rows else set()
    metrics = train_rows(CAUSAL_BASE, [r for r in rows if r["id"] in kept], max_len, cfg, CAUSAL_RETRAINED)
    write_json(CAUSAL_METRICS / "retrain.json", metrics)
    return metrics


if __name__ == "__main__":
    main(retrain_flow, check=config)
