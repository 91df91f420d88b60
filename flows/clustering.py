"""DVC stage `clustering`: per layer, agglomerative clustering of neurons by their activation profiles (SNKU)."""
from __future__ import annotations

from prefect import flow, get_run_logger

from flows import STATS, main
from lib.core.clustering import ClusterConfig
from lib.core.io import file_digest, load_tensors, save_tensors
from lib.core.params import load_params
from lib.data.records import PipelineConfig
from tasks import use_compute
from tasks.clusters import cluster_stats


def config(params_file: str) -> tuple[ClusterConfig, PipelineConfig]:
    """The stage's params: sections `clustering` and `pipeline`."""
    params = load_params(params_file)
    return params.get("clustering", ClusterConfig), params.get("pipeline", PipelineConfig)


@flow(name="clustering")
def clustering_flow(params_file: str = "params.yaml") -> None:
    """Cosine distance between neurons' activation profiles over the bag, clustered per layer."""
    use_compute(params_file)
    cfg, pipeline = config(params_file)
    for cat in pipeline.categories:
        path = STATS["activations"] / f"{cat}.safetensors"
        labels, seconds = cluster_stats(load_tensors(path)["activations"], file_digest(path), cfg, cat)
        save_tensors(STATS["clusters"] / f"{cat}.safetensors", {"labels": labels}, meta={"seconds": f"{seconds:.6f}"})
        get_run_logger().info("clusters %s: %s per layer", cat, [int(layer.max()) + 1 for layer in labels])


if __name__ == "__main__":
    main(clustering_flow, check=config)
