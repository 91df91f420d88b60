"""Benchmark: NeuMuter mask training, batched (lib.methods.neumuter.train_mask) vs a naive version.

Usage: python perf/neumuter.py [--model DIR] [--forget 16] [--length 64] [--neighbours 1] [--passes 3]
                                [--batch 8] [--dtype float64] [--threads 1] [--seed 0]

Naive (`naive_train`, below): the straightforward way, as the public code works: a second model copy
(copy.deepcopy) supplies the reference distribution, recomputed every step, and every forget sample and
every neighbour runs alone (batch size 1, no padding). To follow the same optimisation path it sums the
per-sample terms of a batch of --batch forget samples into one loss and takes one Adam step per batch,
exactly as the batched version's step (one padded forward of the batch's forget samples and neighbours,
reference log-probs computed once before training, no model copy).
Both sides: same seed, same passes, deterministic gates (sample_gates=False) so both are deterministic;
hard-concrete module and the forget weight shared, everything else separate. Each side runs in a fresh
subprocess so its peak RSS (resource.getrusage ru_maxrss) is its own; the delta is the peak during training
over the peak before it (model built, inputs made). Default model: a random LLaMA-style config (4 layers,
hidden 128, d_ff 347, vocab 1000); --model takes a local checkpoint folder (AutoModelForCausalLM).
Prints the max |difference| of the trained deterministic mask values (asserted <= 1e-4 in float64), each
side's wall time, the ratio and peak RSS.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM
from transformers.utils import logging as hf_logging

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a plain script

from _sides import rss_mb, run_sides  # noqa: E402  (perf/ is sys.path[0] when run as a script)
from lib.core.adapter import FFNAdapter  # noqa: E402
from lib.families.causal import CausalFamily, batches, of  # noqa: E402
from lib.methods.hard_concrete import HardConcreteMask, gated  # noqa: E402
from lib.methods import neumuter as nm  # noqa: E402
from lib.methods import Inputs  # noqa: E402

TOLERANCE_F64 = 1e-4
REPLACE = 0.5  # share of a forget sample's tokens a neighbour replaces (stand-in for the MLM rewrite)


def build_model(path: str | None, dtype: torch.dtype, seed: int) -> nn.Module:
    """A local checkpoint, or the small random LLaMA-style default, in eval mode and `dtype`."""
    if path:
        model = AutoModelForCausalLM.from_pretrained(path)
    else:
        torch.manual_seed(seed)
        config = LlamaConfig(vocab_size=1000, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                             num_key_value_heads=2, intermediate_size=347, max_position_embeddings=256,
                             bos_token_id=1, eos_token_id=2, pad_token_id=0)
        model = LlamaForCausalLM(config)
    return model.to(dtype).eval()


def build_inputs(vocab: int, pad_id: int, args: argparse.Namespace) -> Inputs:
    """Random forget rows and, per row, --neighbours rewrites with REPLACE of their tokens resampled; seed --seed."""
    gen = torch.Generator().manual_seed(args.seed)
    forget = torch.randint(3, vocab, (args.forget, args.length), generator=gen)
    rows = []
    for row in forget:
        for _ in range(args.neighbours):
            swap = torch.rand(args.length, generator=gen) < REPLACE
            rows.append(torch.where(swap, torch.randint(3, vocab, (args.length,), generator=gen), row).tolist())
    family = CausalFamily(SimpleNamespace(pad_token_id=pad_id), batch_size=args.batch)  # no tokenizer needed: ids only
    return Inputs(family, of(forget.tolist()), neighbours=of(rows), seed=args.seed)


def naive_kl(reference: nn.Module, model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Σ_t KL(reference ‖ model) of one unpadded row (1, T), the reference recomputed by the copy."""
    with torch.no_grad():
        log_p = F.log_softmax(reference(input_ids=ids).logits[0, :-1], dim=-1)
    log_q = F.log_softmax(model(input_ids=ids).logits[0, :-1], dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum()


def naive_step(model: nn.Module, reference: nn.Module, mask: HardConcreteMask, adapter: FFNAdapter,
               inputs: Inputs, index: list[int], k: int, cfg: nm.Config) -> torch.Tensor:
    """Eq. 13 for one batch, every forget sample and neighbour in its own forward."""
    gates = mask.deterministic()
    nll, tokens, kls = [], 0, []
    with gated(adapter, mask.layers, gates):
        for j in index:
            ids = torch.tensor([inputs.forget.ids[j]])
            nll.append(F.cross_entropy(model(input_ids=ids).logits[0, :-1], ids[0, 1:], reduction="sum"))
            tokens += ids.shape[1] - 1
            for i in range(k):
                kls.append(naive_kl(reference, model, torch.tensor([inputs.neighbours.ids[j * k + i]])))
    nll_sum = torch.stack(nll).sum()
    weight = nm.forget_weight(float(nll_sum.detach()) / tokens, cfg)
    return weight * nll_sum / len(index) + cfg.lambda_kl * torch.stack(kls).mean() + cfg.eta_l0 * mask.l0()


def naive_train(model: nn.Module, adapter: FFNAdapter, inputs: Inputs, cfg: nm.Config) -> HardConcreteMask:
    """The straightforward trainer: model copy for the reference, batch size 1 forwards, deterministic gates."""
    reference = copy.deepcopy(model)
    k = nm.neighbours_per_sample(inputs)
    dtype = torch.promote_types(next(model.parameters()).dtype, torch.float32)
    mask = HardConcreteMask(nm.masked_layers(adapter, cfg), adapter.d_ff, cfg.beta, cfg.init_log_alpha, dtype=dtype)
    optimizer = torch.optim.Adam([mask.log_alpha], lr=cfg.learning_rate)
    for p in model.parameters():
        p.requires_grad_(False)
    for _ in range(cfg.passes):
        for index in batches(len(inputs.forget), cfg.batch_size):
            loss = naive_step(model, reference, mask, adapter, inputs, index, k, cfg)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return mask


def run_side(args: argparse.Namespace) -> None:
    """Child process: build model and inputs, train one side, save its mask values and stats."""
    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    model = build_model(args.model, getattr(torch, args.dtype), args.seed)
    adapter = FFNAdapter.for_model(model)
    pad_id = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    inputs = build_inputs(model.config.vocab_size, pad_id, args)
    cfg = nm.Config(passes=args.passes, batch_size=args.batch, sample_gates=False)
    before = rss_mb()
    start = time.perf_counter()
    if args.side == "batched":
        mask, _ = nm.train_mask(model, adapter, inputs, cfg)  # its seed is inputs.seed (--seed)
    else:
        mask = naive_train(model, adapter, inputs, cfg)
    wall = time.perf_counter() - start
    torch.save({"values": mask.deterministic().detach(), "log_alpha": mask.log_alpha.detach()}, args.out)
    print(json.dumps({"wall": wall, "rss_before": before, "rss_peak": rss_mb()}))


def main(argv: list[str] | None = None) -> None:
    """Parse flags; as a child run one side, else spawn both sides and compare."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="local checkpoint folder (default: random LLaMA-style)")
    for flag, default in (("forget", 16), ("length", 64), ("neighbours", 1), ("passes", 3), ("batch", 8),
                          ("threads", 1), ("seed", 0)):
        parser.add_argument(f"--{flag}", type=int, default=default)
    parser.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    parser.add_argument("--side", choices=("batched", "naive"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    if args.side:
        return run_side(args)
    stats, masks = run_sides(__file__, ("batched", "naive"), argv)
    report(args, stats, masks)


def report(args: argparse.Namespace, stats: dict[str, dict[str, float]], masks: dict[str, dict]) -> None:
    """Print per-side numbers and the one-line summary; assert the masks agree in float64."""
    diff = float((masks["batched"]["values"] - masks["naive"]["values"]).abs().max())
    alpha_diff = float((masks["batched"]["log_alpha"] - masks["naive"]["log_alpha"]).abs().max())
    moved = float((masks["batched"]["log_alpha"] - math.log(11.0)).abs().mean())
    closing = int((masks["batched"]["values"] < 1).sum())
    print(f"model={args.model or 'random llama 4x128, d_ff 347, vocab 1000'} dtype={args.dtype} "
          f"forget={args.forget}x{args.length} neighbours/sample={args.neighbours} passes={args.passes} "
          f"batch={args.batch} threads={args.threads}")
    for side, s in stats.items():
        print(f"{side:8s} wall {s['wall']:.2f} s, peak RSS {s['rss_peak']:.0f} MB "
              f"(+{s['rss_peak'] - s['rss_before']:.0f} MB during training)")
    print(f"mask moved: mean |log alpha - log 11| {moved:.3f}, {closing} gates below 1; "
          f"max |log alpha diff| {alpha_diff:.2e}")
    b, n = stats["batched"], stats["naive"]
    print(f"ratio {n['wall'] / b['wall']:.2f}x (batched {b['wall']:.2f} s vs naive {n['wall']:.2f} s), "
          f"peak RSS {b['rss_peak']:.0f} MB vs {n['rss_peak']:.0f} MB, max |mask diff| {diff:.2e}")
    if args.dtype == "float64":
        assert diff <= TOLERANCE_F64, f"masks differ by {diff:.2e} > {TOLERANCE_F64:.0e}"


if __name__ == "__main__":
    main()
