"""Fine-tuning data-parallel over `compute.processes` ranks: torchrun (torch.distributed.run) starts the ranks.

`train_model` is what every fine-tuning stage calls. With `compute.processes: 1` (the default) it trains in
this process. With N > 1 it saves the model and the job (training items, recipe) into a private temporary
folder and runs `python -m torch.distributed.run --standalone --nproc_per_node N -m tasks.parallel <folder>`:
each rank loads the model through the one loading path (rank r on cuda:r under CUDA with NCCL, else the CPU
with gloo), trains on its share of every batch with gradients averaged before each step
(lib.core.finetune.train), and rank 0 writes the trained weights (safetensors), which are loaded back into
the caller's model. The flow, its Prefect task runs and its outputs stay in the stage's own process.
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
import torch.distributed as dist
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from lib.core.finetune import BatchLoss, MlmConfig, OnStep, TrainConfig, TrainLog, data_parallel, train
from lib.core.models import ComputeConfig, load_model, resolve_device, save_model, usable_cpus
from lib.families.causal import Sequences, nll_batch_loss
from lib.families.masked import mlm_batch_loss

JOB, WEIGHTS, LOG = "job.json", "trained.safetensors", "log.json"
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class TrainingSet:
    """What a fine-tuning run learns, in a form another process can read: token rows (causal) or texts (masked)."""

    family: str  # "causal" | "masked"
    ids: tuple[tuple[int, ...], ...] = ()  # causal: each training sequence's token ids
    pad_id: int = 0
    texts: tuple[str, ...] = ()  # masked: the training texts (chunked by the recipe's max_len)

    @classmethod
    def causal(cls, seqs: Sequences, pad_id: int) -> TrainingSet:
        """The causal-LM training sequences."""
        return cls("causal", ids=tuple(tuple(int(t) for t in row) for row in seqs.ids), pad_id=int(pad_id))

    @classmethod
    def masked(cls, texts: list[str]) -> TrainingSet:
        """The masked-LM training texts."""
        return cls("masked", texts=tuple(texts))

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> TrainingSet:
        """The set as `dataclasses.asdict` wrote it to a job file (lists back to tuples)."""
        return cls(raw["family"], tuple(tuple(row) for row in raw["ids"]), raw["pad_id"], tuple(raw["texts"]))


def batch_loss_of(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, data: TrainingSet,
                  cfg: TrainConfig) -> tuple[int, BatchLoss]:
    """(training items, loss of a batch of them): the family's fine-tuning loss."""
    if data.family == "masked":
        return mlm_batch_loss(model, tokenizer, list(data.texts), cfg)
    seqs = Sequences(data.ids, (None,) * len(data.ids))
    return len(seqs), nll_batch_loss(model, seqs, data.pad_id)


def train_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, data: TrainingSet, cfg: TrainConfig,
                compute: ComputeConfig, on_step: OnStep | None = None,
                autocast: torch.dtype | None = None) -> TrainLog:
    """Fine-tune `model` in place on `data`: here, or over compute.processes torchrun ranks (module docstring)."""
    if compute.processes == 1:
        return train(model, *batch_loss_of(model, tokenizer, data, cfg), cfg, on_step=on_step, autocast=autocast)
    with tempfile.TemporaryDirectory(prefix="unlearn-ddp-") as tmp:  # mode 0700: training text stays private
        folder = Path(tmp)
        save_model(model, tokenizer, folder / "model")
        job = {"data": dataclasses.asdict(data), "cfg": dataclasses.asdict(cfg), "family": data.family,
               "device": resolve_device(compute.device).type, "threads": worker_threads(compute),
               "autocast": str(autocast).removeprefix("torch.") if autocast is not None else None}
        (folder / JOB).write_text(json.dumps(job))
        launch(folder, compute.processes, job["threads"])
        safetensors.torch.load_model(model, str(folder / WEIGHTS), strict=True, device=str(model.device))
        log = json.loads((folder / LOG).read_text())
    model.eval()
    return TrainLog(log["steps"], tuple(log["epoch_losses"]), log["seconds"], log["ranks"])


def worker_threads(compute: ComputeConfig) -> int:
    """Torch CPU threads per rank: the configured count, or the usable CPUs shared out between the ranks."""
    return compute.threads or max(1, usable_cpus() // compute.processes)


def launch(folder: Path, processes: int, threads: int) -> None:
    """Run the job in `folder` on `processes` torchrun ranks on this machine (loopback rendezvous)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    if sys.platform.startswith("linux"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # gloo's pairs on loopback, not the host's external address
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               "-m", "tasks.parallel", str(folder)]
    done = subprocess.run(command, env=env, cwd=ROOT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"data-parallel fine-tuning on {processes} ranks failed (exit code {done.returncode}); "
                           f"the ranks' errors are printed above")


def _job_config(job: dict[str, Any]) -> TrainConfig:
    """The recipe of a saved job (masked LMs: the MLM recipe with its masking)."""
    kind = MlmConfig if job["family"] == "masked" else TrainConfig
    names = {f.name for f in dataclasses.fields(kind)}
    return kind(**{k: v for k, v in job["cfg"].items() if k in names})


def _progress(rank: int) -> OnStep | None:
    """Rank 0 prints a line every 10 % of the steps (the other ranks stay quiet)."""
    if rank != 0:
        return None

    def on_step(step: int, total: int, loss: float) -> None:
        """Print the step and loss now and then."""
        if step == total or step % max(1, total // 10) == 0:
            print(f"data-parallel fine-tuning: step {step}/{total}, loss {loss:.3f}", file=sys.stderr, flush=True)

    return on_step


def worker(folder: Path) -> None:
    """One torchrun rank: load the saved model, train on this rank's share, rank 0 saves the result."""
    job = json.loads((folder / JOB).read_text())
    cuda = job["device"] == "cuda"
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        torch.set_num_threads(job["threads"])
        compute = ComputeConfig(device=f"cuda:{local}" if cuda else "cpu", dtype="float32", threads=job["threads"])
        model, tokenizer = load_model(str(folder / "model"), job["family"], compute=compute)
        cfg = _job_config(job)
        rank, _ = data_parallel()
        data = TrainingSet.from_json(job["data"])
        log = train(model, *batch_loss_of(model, tokenizer, data, cfg), cfg, on_step=_progress(rank),
                    autocast=getattr(torch, job["autocast"]) if job["autocast"] else None)
        if rank == 0:
            safetensors.torch.save_model(model, str(folder / WEIGHTS))
            (folder / LOG).write_text(json.dumps(dataclasses.asdict(log)))
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
