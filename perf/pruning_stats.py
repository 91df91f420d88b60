"""Benchmark: Selective Pruning statistics, batched (lib.methods.pruning.collect_stats) vs a per-token loop.

Usage: python perf/pruning_stats.py [--layers 4] [--tokens 4096] [--batch-size 8] [--length 128]
                                     [--vocab 49152] [--dtype float32] [--threads 1] [--repeats 3]
                                     [--seed 0]

Per-token baseline (`per_token_stats`, below), the way the public code works: every sequence runs alone
(batch 1, no padding); hooks keep every layer's FFN neuron inputs (down-projection input) and attention
neuron inputs (attention output-projection input) of that forward; then, for each token, a Python loop
updates the running sums of every layer and kind neuron-vector by neuron-vector (count, Σ|a|, #(a > 0),
Σ√|a|, Σa, Σa², float64), and the five importances (mean_abs, freq_pos, mean_sqrt, std, rms) come from
those sums by their formulas, written here again. Batched side: collect_stats over right-padded batches
of --batch-size, float64 running sums over the valid tokens, no per-token loop.
Both sides see the same model (random LLaMA config sized like SmolLM2-135M: hidden 576, d_ff 1536, 9 heads,
3 KV heads, vocab 49152, tied embeddings; --layers of them, no download) and the same --tokens tokens:
random token ids, sequences of --length//2..--length tokens. Each side runs in a fresh subprocess: one
untimed warm-up forward, then the peak RSS is reset (/proc/self/clear_refs "5") so the reported peak (VmHWM;
torch's allocations are invisible to tracemalloc) covers the collection alone, also shown over the RSS just
before it. After collection each side times the same forwards again without hooks (padded batches /
batch 1), so "statistics" = wall − forwards is the cost of the hooks and the accumulation. Times are the
best of --repeats runs of each (the machine is shared); the peak RSS is the first collection's.
Prints tokens, each side's wall time, the ratios (whole and statistics alone), peak RSS and the max
|difference| of every statistic per neuron kind, and asserts the two agree (freq_pos in float32 within a
few sign flips of near-zero activations: batch-1 and padded-batch forwards round differently).
Keep --threads 1 on a shared machine: with 2 threads the baseline's tiny per-token ops can stall on the
thread pool (seen here: 14 s instead of ~0.5 s of statistics for 512 tokens).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Iterator

import torch
from torch import Tensor, nn
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.utils import logging as hf_logging

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a plain script

from _sides import rss_mb, run_sides  # noqa: E402  (perf/ is sys.path[0] when run as a script)
from lib.core.adapter import FFNAdapter  # noqa: E402
from lib.families.causal import CausalFamily, Sequences, batches, of, on_model, pad  # noqa: E402
from lib.methods.pruning import IMPORTANCES, KINDS, attn_outputs, collect_stats, widths  # noqa: E402

SUMS = ("sum_abs", "n_pos", "sum_sqrt", "total", "sum_sq")  # RunningStats' running sums, besides count
TOLERANCE = {"float32": 1e-4, "float64": 1e-9}  # max |diff| of the continuous statistics
FLIPS = {"float32": 4, "float64": 0}  # freq_pos: sign flips allowed per (layer, neuron), in tokens


def build_model(layers: int, vocab: int, dtype: torch.dtype, seed: int) -> nn.Module:
    """Random LLaMA with SmolLM2-135M's widths and `layers` layers, eval mode, `dtype`."""
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=576, intermediate_size=1536, num_hidden_layers=layers,
                         num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                         rope_theta=100000.0, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
                         pad_token_id=0)
    return LlamaForCausalLM(config).to(dtype).eval()


def build_sequences(tokens: int, length: int, vocab: int, seed: int) -> Sequences:
    """Random rows of length//2..length ids (never the pad id 0) totalling exactly `tokens` tokens."""
    if tokens < 2 or length < 4:
        raise ValueError(f"tokens={tokens}, length={length} invalid; allowed: tokens >= 2, length >= 4")
    gen = torch.Generator().manual_seed(seed)
    rows, left = [], tokens
    while left > 0:
        n = int(torch.randint(length // 2, length + 1, (1,), generator=gen))
        n = left if left - n < 2 else min(n, left)  # never leave a 1-token remainder
        rows.append(torch.randint(3, vocab, (n,), generator=gen).tolist())
        left -= n
    return of(rows)


@contextmanager
def recording(adapter: FFNAdapter, store: dict[str, list[Tensor | None]]) -> Iterator[None]:
    """Hooks writing each layer's FFN and attention neuron inputs of the last forward into `store`."""
    def keep(kind: str, layer: int, x: Tensor) -> Tensor:
        """Store x (1, T, n) of `layer` and pass it on unchanged."""
        store[kind][layer] = x.detach()[0]
        return x

    def attn_hook(layer: int) -> Callable[[nn.Module, tuple], None]:
        """Pre-hook on `layer`'s attention output projection (returns None: the input stays as is)."""
        def hook(_mod: nn.Module, args: tuple) -> None:
            keep("attn", layer, args[0])
        return hook

    handles = [mod.register_forward_pre_hook(attn_hook(layer)) for layer, mod in enumerate(attn_outputs(adapter))]
    try:
        with adapter.patch(lambda layer, x: keep("ffn", layer, x)):
            yield
    finally:
        for handle in handles:
            handle.remove()


def zero_sums(n_layers: int, width: int) -> list[dict[str, Tensor]]:
    """Per layer: float64 count and the five running sums of `width` neurons."""
    return [{"count": torch.zeros((), dtype=torch.float64),
             **{name: torch.zeros(width, dtype=torch.float64) for name in SUMS}} for _ in range(n_layers)]


def token_update(acc: dict[str, Tensor], a: Tensor) -> None:
    """Add one token's neuron vector `a` (n,) to the running sums `acc`."""
    a = a.double()
    mag = a.abs()
    acc["count"] += 1
    acc["sum_abs"] += mag
    acc["n_pos"] += a > 0
    acc["sum_sqrt"] += mag.sqrt()
    acc["total"] += a
    acc["sum_sq"] += a * a


def per_token_stats(model: nn.Module, adapter: FFNAdapter, seqs: Sequences) -> dict[str, list[dict[str, Tensor]]]:
    """The baseline: batch-1 forwards, then a Python loop over tokens, layers and kinds."""
    sums = {kind: zero_sums(adapter.n_layers, width) for kind, width in widths(adapter).items()}
    store: dict[str, list[Tensor | None]] = {kind: [None] * adapter.n_layers for kind in KINDS}
    device = next(model.parameters()).device
    with torch.no_grad(), recording(adapter, store):
        for row in seqs.ids:
            model(input_ids=torch.tensor([row], device=device))
            for t in range(len(row)):
                for kind in KINDS:
                    for layer in range(adapter.n_layers):
                        token_update(sums[kind][layer], store[kind][layer][t])
    return sums


def importances(acc: dict[str, Tensor]) -> dict[str, Tensor]:
    """The five importance functions of one layer's sums, by their formulas (std: real deviation)."""
    mean = {name: acc[name] / acc["count"].clamp(min=1) for name in SUMS}
    return {"mean_abs": mean["sum_abs"], "freq_pos": mean["n_pos"], "mean_sqrt": mean["sum_sqrt"],
            "std": (mean["sum_sq"] - mean["total"] ** 2).clamp(min=0).sqrt(), "rms": mean["sum_sq"].sqrt()}


def baseline_results(sums: dict[str, list[dict[str, Tensor]]]) -> dict[str, dict[str, Tensor]]:
    """Per kind: (L,) counts and each importance (L, n), stacked over layers."""
    out = {}
    for kind, layers in sums.items():
        per_layer = [importances(acc) for acc in layers]
        out[kind] = {"count": torch.stack([acc["count"] for acc in layers]),
                     **{name: torch.stack([imp[name] for imp in per_layer]) for name in IMPORTANCES}}
    return out


def memory_mb(field: str) -> float:
    """/proc/self/status `field` (VmRSS: resident now, VmHWM: peak since the last reset), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return rss_mb()  # no /proc: lifetime peak


def reset_peak() -> None:
    """Reset this process's peak RSS (Linux >= 4.0) so VmHWM covers only what follows."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:  # not allowed here: the peak then includes the model build
        pass


def forward_only(model: nn.Module, seqs: Sequences, pad_id: int, batch_size: int) -> float:
    """Seconds of the same forwards without hooks or statistics (batch 1 = the per-token side's)."""
    start = time.perf_counter()
    with torch.no_grad():
        for index in batches(len(seqs), batch_size):
            ids, mask = on_model(model, *pad([seqs.ids[i] for i in index], pad_id))
            model(input_ids=ids, attention_mask=mask)
    return time.perf_counter() - start


def collect(model: nn.Module, adapter: FFNAdapter, seqs: Sequences, side: str,
            batch_size: int) -> dict[str, dict[str, Tensor]]:
    """One side's per-kind counts and importances."""
    if side == "per_token":
        return baseline_results(per_token_stats(model, adapter, seqs))
    family = CausalFamily(SimpleNamespace(pad_token_id=model.config.pad_token_id), batch_size)
    stats = collect_stats(model, adapter, family, seqs, batch_size=batch_size)
    return {kind: {"count": s.count, **{name: s.importance(name) for name in IMPORTANCES}}
            for kind, s in stats.items()}


def run_side(args: argparse.Namespace) -> None:
    """Child process: build model and sequences, collect one side's statistics, save them and the stats."""
    torch.set_num_threads(args.threads)
    hf_logging.set_verbosity_error()
    model = build_model(args.layers, args.vocab, getattr(torch, args.dtype), args.seed)
    adapter = FFNAdapter.for_model(model)
    seqs = build_sequences(args.tokens, args.length, args.vocab, args.seed)
    with torch.no_grad():  # warm-up, so neither side's time includes first-call setup
        model(input_ids=torch.tensor([seqs.ids[0]]))
    reset_peak()
    before = memory_mb("VmRSS")
    walls, forwards, peaks = [], [], []
    for _ in range(args.repeats):  # best of --repeats: the machine is shared, the minimum is the least noisy
        start = time.perf_counter()
        results = collect(model, adapter, seqs, args.side, args.batch_size)
        walls.append(time.perf_counter() - start)
        peaks.append(memory_mb("VmHWM"))  # peaks[0]: the first collection's, before any timed forward
        forwards.append(forward_only(model, seqs, model.config.pad_token_id,
                                     1 if args.side == "per_token" else args.batch_size))
    wall, forward, peak = min(walls), min(forwards), peaks[0]
    torch.save(results, args.out)
    print(json.dumps({"wall": wall, "forward": forward, "rss_before": before, "rss_peak": peak,
                      "sequences": len(seqs)}))


def parse(argv: list[str]) -> argparse.Namespace:
    """Command-line flags."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag, default in (("layers", 4), ("tokens", 4096), ("batch-size", 8), ("length", 128),
                          ("vocab", 49152), ("threads", 1), ("repeats", 3), ("seed", 0)):
        parser.add_argument(f"--{flag}", type=int, default=default)
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--side", choices=("batched", "per_token"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.layers, args.batch_size, args.threads, args.repeats) < 1:
        raise ValueError(f"--layers, --batch-size, --threads, --repeats must be >= 1; got {args.layers}, "
                         f"{args.batch_size}, {args.threads}, {args.repeats}")
    return args


def main(argv: list[str] | None = None) -> None:
    """As a child run one side, else spawn both sides and compare."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    if args.side:
        return run_side(args)
    stats, results = run_sides(__file__, ("batched", "per_token"), argv)
    report(args, stats, results)


def report(args: argparse.Namespace, stats: dict[str, dict[str, float]],
           results: dict[str, dict[str, dict[str, Tensor]]]) -> None:
    """Print both sides' numbers and every statistic's max |diff|; assert the statistics agree."""
    print(f"model=random llama {args.layers} layers, hidden 576, d_ff 1536, vocab {args.vocab} "
          f"dtype={args.dtype} tokens={args.tokens} ({stats['batched']['sequences']} sequences of "
          f"{args.length // 2}..{args.length}) batch-size={args.batch_size} threads={args.threads} "
          f"best of {args.repeats}")
    for side, s in stats.items():
        print(f"{side:9s} wall {s['wall']:.2f} s (forwards alone {s['forward']:.2f} s, statistics "
              f"{s['wall'] - s['forward']:.2f} s), peak RSS {s['rss_peak']:.0f} MB "
              f"(+{s['rss_peak'] - s['rss_before']:.0f} MB over the RSS before collection)")
    b, p = stats["batched"], stats["per_token"]
    stat = lambda side: max(side["wall"] - side["forward"], 1e-3)  # noqa: E731  (time beyond the forwards)
    print(f"ratio {p['wall'] / b['wall']:.1f}x (batched {b['wall']:.2f} s vs per-token {p['wall']:.2f} s), "
          f"{args.tokens / b['wall']:.0f} vs {args.tokens / p['wall']:.0f} tokens/s; statistics alone "
          f"{stat(p) / stat(b):.1f}x ({stat(b):.2f} s vs {stat(p):.2f} s)")
    failures = []
    for kind in KINDS:
        got, ref = results["batched"][kind], results["per_token"][kind]
        counts = ref["count"]
        if not torch.equal(got["count"], counts) or int(counts[0]) != args.tokens:
            failures.append(f"{kind} counts {got['count'].tolist()} vs {counts.tolist()} (tokens {args.tokens})")
        diffs = {name: float((got[name] - ref[name]).abs().max()) for name in IMPORTANCES}
        print(f"{kind:4s} max |diff|: " + ", ".join(f"{name} {d:.2e}" for name, d in diffs.items()))
        for name, d in diffs.items():
            limit = FLIPS[args.dtype] / args.tokens if name == "freq_pos" else TOLERANCE[args.dtype]
            if d > limit + 1e-12:
                failures.append(f"{kind} {name} differs by {d:.2e} > {limit:.2e}")
    assert not failures, "; ".join(failures)


if __name__ == "__main__":
    main()
