"""GPU check: the pipeline's compute on cuda (float32 and bfloat16) against the CPU float32 run, in minutes.

Usage: python perf/gpu_check.py [--configs cpu:float32,cuda:float32,cuda:bfloat16] [--out gpu_check.json]

Each configuration runs the same work through the same code as the stages, on the embedded models (no hub):
SmolLM2-135M fine-tuned 3 epochs on 16 generated private emails (AdamW, float32 weights under autocast), its MA
and EL_4 on them, Grad x Act of the secret tokens of 4 and Integrated Gradients (m = 5) of 2 tokens each, 5 steps of GA on 4 of them;
MiniLM fine-tuned as a masked LM on the same texts and its Grad x Act at masked secret tokens. Printed per
configuration: each step's seconds, the peak memory (torch.cuda.max_memory_allocated on cuda, RSS on the CPU),
and the differences from the first configuration (the CPU float32 reference) against the tolerances below.
Exit code 1 when a difference is outside its tolerance. Without a GPU, `--configs cpu:float32,cpu:bfloat16`
checks the script and the bfloat16 path.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a plain script

from _sides import rss_mb  # noqa: E402  (perf/ is sys.path[0] when run as a script)
from lib.core.adapter import FFNAdapter  # noqa: E402
from lib.core.attribution import grad_x_act  # noqa: E402
from lib.core.finetune import MlmConfig, TrainConfig, train  # noqa: E402
from lib.core.ig import IGConfig, cap_targets, integrated_gradients  # noqa: E402
from lib.core.models import DTYPES, ComputeConfig, load_model  # noqa: E402
from lib.families.causal import CausalFamily, accuracy, encode_all, nll_batch_loss, of  # noqa: E402
from lib.families.masked import mlm_batch_loss  # noqa: E402
from lib.families.memorization import extraction_likelihood  # noqa: E402
from lib.methods import Inputs, make_config, unlearn  # noqa: E402

# tolerances against the CPU float32 reference: (float32 on another device, bfloat16)
TOLERANCE = {"finetune_loss": (0.02, 0.10),  # relative difference of the last epoch's mean loss
             "ma": (0.05, 0.15),  # mean |difference| of per-sample MA
             "el": (0.05, 0.20),  # mean |difference| of per-sample EL_4
             "gxa_cosine": (0.99, 0.90),  # cosine similarity of the (L, d_ff) Grad x Act (at least)
             "ig_cosine": (0.99, 0.90),  # cosine similarity of the summed IG (at least)
             "ga_nll_rise": (0.25, 0.50),  # relative difference of GA's rise of the forget NLL
             "mlm_loss": (0.02, 0.10),
             "mlm_gxa_cosine": (0.99, 0.90)}
AT_LEAST = {"gxa_cosine", "ig_cosine", "mlm_gxa_cosine"}


@dataclass(frozen=True)
class Run:
    """One configuration's outputs, step times and peak memory."""

    name: str
    values: dict[str, Any]
    seconds: dict[str, float]
    peak_mb: float


def emails(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """n short generated emails, each with a phone number (the secret)."""
    rng = random.Random(seed)
    names = ["Alice", "Bruno", "Chen", "Dana", "Emeka", "Farah", "Goran", "Hana"]
    out = []
    for i in range(n):
        phone = "".join(rng.choice("0123456789") for _ in range(10))
        text = (f"Hi {names[i % len(names)]}, the meeting moved to room {rng.randint(100, 999)}. "
                f"Call me at {phone} before noon. Regards, {names[(i + 3) % len(names)]}")
        out.append((text, phone))
    return out


def peak_mb(device: torch.device) -> float:
    """Peak memory so far: CUDA allocations on cuda, else the process's RSS."""
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else rss_mb()


def timed(seconds: dict[str, float], name: str, device: torch.device, fn: Callable[[], Any]) -> Any:
    """Run fn, recording its wall clock (synchronised on cuda)."""
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds[name] = round(time.perf_counter() - start, 2)
    return out


def causal_part(compute: ComputeConfig, values: dict[str, Any], seconds: dict[str, float]) -> torch.device:
    """SmolLM2: fine-tune, MA, EL, Grad x Act, IG, GA; values and step times into the dicts."""
    autocast = None if compute.dtype == "float32" else DTYPES[compute.dtype]
    model, tok = timed(seconds, "load_causal", torch.device("cpu"), lambda: load_model(
        "embedded:smollm2", "causal", compute=ComputeConfig(compute.device, "float32", compute.threads)))
    device = next(model.parameters()).device
    seqs = encode_all(tok, emails(16), max_len=48)  # each email's token ids and its phone number's span
    log = timed(seconds, "finetune_causal", device, lambda: train(
        model, len(seqs), nll_batch_loss(model, seqs, tok.pad_token_id),
        TrainConfig(epochs=3, batch_size=8, learning_rate=1e-4, seed=0), autocast=autocast))
    values["finetune_loss"] = log.final_loss
    model = model.to(DTYPES[compute.dtype])  # the scoring stages load the checkpoint in compute.dtype
    values["ma"] = timed(seconds, "ma", device, lambda: accuracy(model, seqs, tok.pad_token_id, 8)).tolist()
    values["el"] = timed(seconds, "el", device, lambda: extraction_likelihood(
        model, seqs, tok.pad_token_id, n=4, batch_size=8, decode_batch_size=32)).tolist()
    adapter, rows = FFNAdapter.for_model(model), CausalFamily(tok, 8).target_rows(of(seqs.ids[:4], seqs.spans[:4]))
    values["gxa"] = timed(seconds, "grad_x_act", device, lambda: grad_x_act(
        model, adapter, rows.input_ids.to(device), rows.attention_mask.to(device), rows.positions.to(device),
        rows.gold_ids.to(device)).cpu())
    few = cap_targets(rows, 2)  # IG costs rows x layers x steps passes: 2 span tokens per sample
    values["ig"] = timed(seconds, "ig", device, lambda: integrated_gradients(
        model, adapter, few, IGConfig(steps=5, objective="loss", max_rows_per_batch=64)).sum(0).cpu())
    forget = of(seqs.ids[:4], seqs.spans[:4])
    family = CausalFamily(tok, 4)
    with torch.no_grad():
        before = float(family.sample_nll(model, forget, range(4)).mean())
    cfg = make_config("ga", {"learning_rate": 5e-4, "batch_size": 4, "max_steps": 5})
    timed(seconds, "ga", device, lambda: unlearn("ga", model, Inputs(family=family, forget=forget), cfg))
    with torch.no_grad():
        values["ga_nll_rise"] = float(family.sample_nll(model, forget, range(4)).mean()) - before
    return device


def masked_part(compute: ComputeConfig, values: dict[str, Any], seconds: dict[str, float]) -> None:
    """MiniLM: masked-LM fine-tuning and Grad x Act at masked phone-number tokens."""
    autocast = None if compute.dtype == "float32" else DTYPES[compute.dtype]
    model, tok = load_model("embedded:minilm", "masked", compute=ComputeConfig(compute.device, "float32"))
    device = next(model.parameters()).device
    texts = [t for t, _ in emails(16)]
    cfg = MlmConfig(epochs=3, batch_size=8, learning_rate=5e-4, mask_prob=0.3, max_len=48, seed=0)
    log = timed(seconds, "finetune_masked", device, lambda: train(
        model, *mlm_batch_loss(model, tok, texts, cfg), cfg, autocast=autocast))
    values["mlm_loss"] = log.final_loss
    model = model.to(DTYPES[compute.dtype])
    enc = tok(texts[:4], padding=True, return_tensors="pt")
    ids, mask = enc["input_ids"].clone(), enc["attention_mask"]
    digits = [[i for i, t in enumerate(row.tolist()) if tok.decode([t]).strip().isdigit()] for row in ids]
    rows = [(r, p) for r, found in enumerate(digits) for p in found[:2]]
    index, positions = torch.tensor([r for r, _ in rows]), torch.tensor([p for _, p in rows])
    gold = ids[index, positions].clone()
    batch = ids[index].clone()
    batch[torch.arange(len(rows)), positions] = tok.mask_token_id
    values["mlm_gxa"] = timed(seconds, "grad_x_act_masked", device, lambda: grad_x_act(
        model, FFNAdapter.for_model(model), batch.to(device), mask[index].to(device), positions.to(device),
        gold.to(device)).cpu())


def run_config(spec: str) -> Run:
    """Every step of the check under one `device:dtype` configuration."""
    device_name, dtype = spec.split(":")
    compute = ComputeConfig(device=device_name, dtype=dtype)
    torch.manual_seed(0)
    values: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    device = causal_part(compute, values, seconds)
    masked_part(compute, values, seconds)
    return Run(spec, values, seconds, round(peak_mb(device), 1))


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two tensors, flattened, in float64."""
    a, b = a.double().flatten(), b.double().flatten()
    return float(a @ b / (a.norm() * b.norm()).clamp_min(1e-300))


def differences(ref: Run, run: Run) -> dict[str, float]:
    """Each checked quantity's difference from the reference run."""
    r, v = ref.values, run.values
    return {"finetune_loss": abs(v["finetune_loss"] - r["finetune_loss"]) / abs(r["finetune_loss"]),
            "ma": sum(abs(a - b) for a, b in zip(v["ma"], r["ma"])) / len(r["ma"]),
            "el": sum(abs(a - b) for a, b in zip(v["el"], r["el"])) / len(r["el"]),
            "gxa_cosine": cosine(v["gxa"], r["gxa"]), "ig_cosine": cosine(v["ig"], r["ig"]),
            "ga_nll_rise": abs(v["ga_nll_rise"] - r["ga_nll_rise"]) / max(abs(r["ga_nll_rise"]), 1e-6),
            "mlm_loss": abs(v["mlm_loss"] - r["mlm_loss"]) / abs(r["mlm_loss"]),
            "mlm_gxa_cosine": cosine(v["mlm_gxa"], r["mlm_gxa"])}


def verdicts(diff: dict[str, float], dtype: str) -> dict[str, bool]:
    """Whether each difference is within its tolerance for this dtype."""
    pick = 1 if dtype != "float32" else 0
    return {k: (d >= TOLERANCE[k][pick]) if k in AT_LEAST else (d <= TOLERANCE[k][pick]) for k, d in diff.items()}


def main() -> int:
    """Run every configuration, print the table, write the JSON; 1 when a check fails."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="cpu:float32,cuda:float32,cuda:bfloat16")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    specs = args.configs.split(",")
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda or 'none'}, "
          f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}")
    runs = [run_config(spec) for spec in specs]
    ok, report = True, []
    for run in runs:
        print(f"\n{run.name}: peak memory {run.peak_mb} MB; seconds " + ", ".join(f"{k} {v}" for k, v in run.seconds.items()))
        if run is runs[0]:
            continue
        diff = differences(runs[0], run)
        good = verdicts(diff, run.name.split(":")[1])
        ok &= all(good.values())
        pick = 0 if run.name.endswith("float32") else 1
        for key, value in diff.items():
            bound = (">= " if key in AT_LEAST else "<= ") + str(TOLERANCE[key][pick])
            print(f"  {key:16s} {value:10.4f}  (tolerance {bound}) {'ok' if good[key] else 'OUTSIDE'}")
        report.append({"config": run.name, "differences": diff, "within": good})
    if args.out:
        args.out.write_text(json.dumps({"runs": [{"config": r.name, "seconds": r.seconds, "peak_mb": r.peak_mb}
                                                 for r in runs], "checks": report}, indent=1))
    print("\nall within tolerance" if ok else "\nSOME CHECKS OUTSIDE TOLERANCE")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
