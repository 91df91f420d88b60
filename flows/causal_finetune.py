"""DVC stage `causal_finetune`: the base causal LM fine-tuned on the training text, private emails with their copies."""
from __future__ import annotations

from prefect import flow

from flows import CAUSAL_BASE, CAUSAL_CORPUS, CAUSAL_FINETUNED, CAUSAL_METRICS, main
from lib.core.finetune import TrainConfig
from lib.core.io import read_jsonl, write_json
from lib.core.params import Count, load_params
from tasks import use_compute
from tasks.finetune import train_rows


def config(params_file: str) -> tuple[TrainConfig, int]:
    """The stage's params: `causal.finetune` and `causal.data.max_len`."""
    params = load_params(params_file)
    return params.get("causal.finetune", TrainConfig), params.get("causal.data.max_len", Count)


@flow(name="causal-finetune")
def finetune_flow(params_file: str = "params.yaml") -> dict:
    """Fine-tune on the training text (every private email with its copies); epochs 0 keeps the base model."""
    use_compute(params_file)
    cfg, max_len = config(params_file)
    metrics = train_rows(CAUSAL_BASE, read_jsonl(CAUSAL_CORPUS / "train.jsonl"), max_len, cfg,
                                   CAUSAL_FINETUNED)
    write_json(CAUSAL_METRICS / "finetune.json", metrics)
    return metrics


if __name__ == "__main__":
    main(finetune_flow, check=config)
