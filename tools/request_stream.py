"""The deletion-request stream benchmark: N sequential requests against the causal track's fine-tuned model.

Each request asks to forget the next `--per-request` private items of the causal corpus (file order) that the
fine-tuned model has memorized (checked on it before the first request, so no request is empty), through
the same service as `unlearn request submit` (lib.deletion.service: verify, forget with the `requests`
policy, audit every earlier item still in force, commit), on a fresh store. Writes, per request, what it
found memorized and forgot, how many earlier items resurfaced, utility (perplexity on held-out text) after
it and its wall clock, as reports/requests_stream.md and reports/requests_stream.png. Needs the causal track's outputs.

    python -m tools.request_stream [--n 10] [--per-request 2] [--store /tmp/stream] [--out reports/requests_stream.md]
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import shutil
import sys
import time
from pathlib import Path

from flows import CAUSAL_CORPUS
from flows.request import config, context, load_base, open_store
from lib.core.io import read_jsonl, write_text
from lib.data.records import Candidate
from lib.deletion.service import Receipt, submit
from tasks import use_compute


def memorized_items(ctx: dict, per_request: int, n: int) -> tuple[list[list[Candidate]], int]:
    """Groups of per_request private items the fine-tuned model has memorized (its MA above the threshold, checked
    on the base model first, in file order), at most n groups; and how many private items there are."""
    rows = [Candidate(**r) for r in read_jsonl(CAUSAL_CORPUS / "candidates.jsonl") if r["secret"]]
    ma = ctx["family"].memorization(load_base().eval(), ctx["encode"](rows))
    known = [row for row, score in zip(rows, ma.tolist()) if score > ctx["threshold"]]
    groups = [known[i * per_request:(i + 1) * per_request] for i in range(min(n, len(known) // per_request))]
    if not groups:
        raise ValueError(f"{len(known)} of {len(rows)} private items are memorized; a request needs {per_request}")
    return groups, len(rows)


def table(rows: list[tuple[Receipt, float]]) -> str:
    """Markdown: one row per request."""
    lines = ["| Request | items | memorized | forgotten | earlier items re-checked | resurfaced | "
             "utility PPL before | after | s |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r.seq + 1} | {r.items} | {r.memorized} | {r.forgotten} | {r.audited} | {r.resurfaced} | "
              f"{r.utility_before:.2f} | {r.utility_after:.2f} | {s:.0f} |" for r, s in rows]
    return "\n".join(lines) + "\n"


def figure(rows: list[tuple[Receipt, float]]) -> bytes:
    """Utility (perplexity) after each request, and the items resurfacing."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot([0] + [r.seq + 1 for r, _ in rows], [rows[0][0].utility_before] + [r.utility_after for r, _ in rows],
            marker="o")
    ax.set_xlabel("requests applied")
    ax.set_ylabel("held-out perplexity")
    ax.set_title("Utility over sequential deletion requests")
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=120)
    plt.close(fig)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    """Run the stream and write its report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--per-request", type=int, default=2)
    parser.add_argument("--store", type=Path, default=Path("/tmp/request-stream"))
    parser.add_argument("--out", type=Path, default=Path("reports/requests_stream.md"))
    args = parser.parse_args(argv)
    use_compute("params.yaml")
    cfg = config("params.yaml")
    shutil.rmtree(args.store, ignore_errors=True)
    cfg["requests"] = dataclasses.replace(cfg["requests"], root=str(args.store))
    store, ctx, rows = open_store(cfg), context(cfg), []
    groups, n_private = memorized_items(ctx, args.per_request, args.n)
    for i, group in enumerate(groups):
        start = time.perf_counter()
        receipt = submit(store=store, load_base=load_base, items=group, request=f"stream-{i + 1}",
                         when=time.strftime("%FT%TZ"), **ctx)
        rows.append((receipt, time.perf_counter() - start))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    problems = store.verify(load_base)
    method = cfg["policy"].method + (" (auto)" if cfg["requests"].method == "auto" else "")
    text = (f"## Sequential deletion requests\n\n{len(groups)} requests of {args.per_request} private items each "
            f"against the fine-tuned model: the first {len(groups) * args.per_request} of the {n_private} private "
            f"items of the causal corpus (file order) that it has memorized (checked on it before the first "
            f"request), policy `{method}`, each audited against every earlier item still in force. Ledger after "
            f"the stream: "
            f"{'whole, every version replays to its digest' if not problems else '; '.join(problems)}.\n\n"
            f"{table(rows)}\n![utility over requests]({args.out.stem}.png)\n")
    write_text(args.out, text)
    # beside the report, not in reports/figures/ (the report stage's DVC output, replaced whole on each run)
    args.out.with_suffix(".png").write_bytes(figure(rows))
    print(text)
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
