"""DVC stage `causal_base`: the base causal LM saved once as safetensors (a GGUF loads in ~15 s, this in ~2 s)."""
from __future__ import annotations

from prefect import flow, get_run_logger

from flows import CAUSAL_BASE, main
from lib.core.models import check_model_folder
from lib.core.params import NonEmpty, load_params
from tasks import load_model_task, save_model_task, use_compute


def config(params_file: str) -> str:
    """The stage's params: `causal.model`."""
    return load_params(params_file).get("causal.model", NonEmpty)


def check(params_file: str) -> str:
    """The params, and a local model folder's config and weights: a bad folder stops the stage before its flow run."""
    name = config(params_file)
    check_model_folder(name)
    return name


@flow(name="causal-base")
def base_flow(params_file: str = "params.yaml") -> None:
    """Load the base causal LM once (GGUF dequantised, or hub) and save it as safetensors."""
    use_compute(params_file)
    name = config(params_file)
    model, tokenizer = load_model_task(name, "causal", float32=True)
    save_model_task(model, tokenizer, CAUSAL_BASE)
    get_run_logger().info("saved %s (%d parameters) as safetensors", name, model.num_parameters())


if __name__ == "__main__":
    main(base_flow, check=check)
