"""Deletion requests against the causal track's fine-tuned model, and the `unlearn` console command.

    unlearn request submit FILE [--id ID]   verify -> forget -> audit -> commit one request (a JSONL of items
                                            {"text", "secret", "id", "category"}, as causal.data.source: jsonl)
    unlearn request rollback                undo the latest version (a new ledger entry)
    unlearn ledger verify                   check the hash chain against the head and replay every patch
    unlearn ledger show                     the entries (digests and numbers, never text)
    unlearn model export DIR [--seq N]      the current (or version N's) model as a Hugging Face folder
    unlearn prefect ARGS                    the Prefect CLI against `make ui`'s server (deployment ls, ...)

Each request is a Prefect flow run (`deletion-request`) and an MLflow run registered as a version of
`requests.registered_model` with alias `current`. The command talks to the Prefect server `make ui` runs when
there is one (the URL it records in .prefect/, else 127.0.0.1:4200), else to a temporary one on `.prefect/`.
Needs the causal track's outputs (`make run-causal`): the fine-tuned model, the corpus, the Eq. 17 threshold.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import subprocess
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import tasks  # noqa: F401  (environment first)
from flows import (CAUSAL_CORPUS, CAUSAL_FINETUNED, CAUSAL_MEMORIZED, CAUSAL_METRICS, error_line, input_errors,
                   params_path, quiet_input_errors)
from flows.serve import DEFAULT_API_URL, running_api_url, server_record
from lib.core.io import MissingInput, read_json, read_jsonl
from lib.core.models import load_model, load_tokenizer
from lib.core.params import Count, load_params
from lib.data.emails import JSONL_ROW, read_jsonl_candidates
from lib.deletion import ledger
from lib.deletion.patch import model_digest
from lib.deletion.service import RequestsConfig, content_digest, rank_methods
from lib.deletion.store import Store, rollback
from lib.families.causal import CausalFamily, encode_all
from lib.methods import make_config
from prefect import flow
from prefect.settings import PREFECT_API_URL, temporary_settings
from tasks import current_compute, use_compute
from tasks.requests import register_task, submit_task
from tasks.tracking import MlflowConfig

def config(params_file: str) -> dict[str, Any]:
    """The `requests` section and what a request reads of the causal track's and MLflow's."""
    params = load_params(params_file)
    cfg = params.get("requests", RequestsConfig)
    policy = cfg.policy().resolved(track_ranking(params.get("causal.pipeline", list[str])))
    names = {policy.method, *policy.by_category.values()}
    return {"requests": cfg, "policy": policy, "max_len": params.get("causal.data.max_len", Count),
            "batch_size": params.get("causal.memorized.batch_size", Count), "mlflow": params.get("mlflow", MlflowConfig),
            "methods": {n: make_config(n, params.get("causal.methods").get(n), where=f"causal.methods.{n}")
                        for n in names}}


def track_ranking(methods: list[str]) -> list[str]:
    """The causal track's methods a request can run, best first (lib.deletion.service.rank_methods), from the
    metrics its causal_evaluate stages wrote; the fixed fallback ranking before any was written."""
    return rank_methods({m: read_json(CAUSAL_METRICS / f"{m}.json") for m in methods
                         if (CAUSAL_METRICS / f"{m}.json").is_file()})


def load_base() -> Any:
    """A fresh copy of the fine-tuned causal model (version 0 of the store) on the compute device."""
    return load_model(str(CAUSAL_FINETUNED), "causal", compute=current_compute())[0]


def open_store(cfg: dict[str, Any]) -> Store:
    """The store of the fine-tuned model's versions."""
    return Store(cfg["requests"].root, model_digest(load_base()))


def context(cfg: dict[str, Any]) -> dict[str, Any]:
    """What service.submit reads: family, encoder, retain and utility texts, the threshold and the policy."""
    tokenizer = load_tokenizer(str(CAUSAL_FINETUNED))  # the weights are loaded once, by the store's replay
    encode = lambda items: encode_all(tokenizer, [(c.text, c.secret) for c in items], cfg["max_len"])  # noqa: E731
    background = [r for r in read_jsonl(CAUSAL_CORPUS / "train.jsonl") if not r["secret"]]
    retain = encode_all(tokenizer, [(r["text"], None) for r in background[: cfg["requests"].retain_samples]],
                        cfg["max_len"])
    valid = read_jsonl(CAUSAL_CORPUS / "valid.jsonl")[: cfg["requests"].utility_texts]
    return {"family": CausalFamily(tokenizer, cfg["batch_size"]), "encode": encode, "retain": retain,
            "utility": encode_all(tokenizer, [(r["text"], None) for r in valid], cfg["max_len"]),
            "policy": cfg["policy"], "configs": lambda name: cfg["methods"][name],
            "threshold": float(read_json(CAUSAL_MEMORIZED / "forget.json")["thresholds"]["ma"])}


def register(cfg: dict[str, Any], store: Store, entry: dict[str, Any], numbers: dict[str, float]) -> str:
    """The version in the MLflow Model Registry (alias current)."""
    return register_task(cfg["mlflow"], cfg["requests"].registered_model, entry,
                         store.patches / f"{entry['seq']}.safetensors", numbers)


@flow(name="deletion-request")
def request_flow(path: str, request_id: str | None = None, params_file: str = "params.yaml") -> dict[str, Any]:
    """Apply one request file to the current version; returns its receipt (ids and numbers) and MLflow version."""
    use_compute(params_file)
    cfg = config(params_file)
    items = read_jsonl_candidates(path)
    request = request_id or f"req-{content_digest(items)[:12]}"
    store = open_store(cfg)
    receipt = submit_task(request, store=store, load_base=load_base, items=items, when=time.strftime("%FT%TZ"),
                          **context(cfg))
    entry = store.entries()[receipt.seq]
    numbers = {k: float(v) for k, v in asdict(receipt).items() if isinstance(v, (int, float))}
    return {**asdict(receipt), "version": register(cfg, store, entry, numbers)}


@flow(name="deletion-rollback")
def rollback_flow(params_file: str = "params.yaml") -> dict[str, Any]:
    """Undo the latest version as a new entry; returns the entry and its MLflow version."""
    use_compute(params_file)
    cfg = config(params_file)
    store = open_store(cfg)
    with store.locked():
        entry = rollback(store, store.replay(load_base()), {"request": f"rollback-{store.head().seq}",
                                                            "content_digest": ledger.GENESIS,
                                                            "time": time.strftime("%FT%TZ")})
    return {"entry": entry, "version": register(cfg, store, entry, {"seq": float(entry["seq"])})}


def running_server() -> Any:
    """Settings that point Prefect at the running server (`make ui`'s, flows.running_api_url) when none was named."""
    url = None if os.environ.get("PREFECT_API_URL") else running_api_url()
    # none running: Prefect starts a temporary one on PREFECT_HOME (.prefect/)
    return temporary_settings(updates={PREFECT_API_URL: url}) if url else contextlib.nullcontext()


def prefect_cli(args: list[str]) -> int:
    """`unlearn prefect ARGS`: the Prefect CLI against the running server, on the repository's PREFECT_HOME, telemetry
    off (a plain `prefect` outside would start a throwaway server and write ~/.prefect)."""
    url = running_api_url()
    if url is None:
        raise MissingInput(f"no Prefect server answers at {DEFAULT_API_URL} (or the one `make ui` recorded in "
                           f"{server_record()}); allowed: start one with `make ui` or set PREFECT_API_URL")
    env = {**os.environ, "PREFECT_API_URL": url}
    return subprocess.run([sys.executable, "-m", "prefect", *args], env=env).returncode


def _parser() -> argparse.ArgumentParser:
    """The command line of `unlearn`."""
    parser = argparse.ArgumentParser(prog="unlearn", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="group", required=True)
    req = sub.add_parser("request").add_subparsers(dest="action", required=True)
    submit = req.add_parser("submit", help="apply a request file (JSONL of items)")
    submit.add_argument("file")
    submit.add_argument("--id", default=None, help="request id (default: req-<content digest>)")
    req.add_parser("rollback", help="undo the latest version")
    led = sub.add_parser("ledger").add_subparsers(dest="action", required=True)
    led.add_parser("verify", help="check the chain and replay every patch")
    led.add_parser("show", help="print the entries")
    cli_ = sub.add_parser("prefect", help="the Prefect CLI against the running server (`make ui`), e.g. "
                          "`unlearn prefect deployment ls`")
    cli_.add_argument("args", nargs=argparse.REMAINDER)
    mod = sub.add_parser("model").add_subparsers(dest="action", required=True)
    export = mod.add_parser("export", help="write a version as a Hugging Face model folder")
    export.add_argument("out")
    export.add_argument("--seq", type=int, default=None, help="version (ledger seq); default: the current one")
    return parser


def run(args: argparse.Namespace, params_file: str) -> int:
    """One command; its exit code."""
    if args.group == "prefect":
        return prefect_cli(args.args)
    use_compute(params_file)
    if args.group == "request":
        if args.action == "submit":  # a bad request file stops here, before a flow run is recorded
            if not Path(args.file).is_file():
                raise MissingInput(f"request file {args.file} not found; allowed: a JSONL file of items {JSONL_ROW}")
            read_jsonl_candidates(args.file)
        quiet_input_errors()
        with running_server():
            out = request_flow(args.file, args.id, params_file) if args.action == "submit" else rollback_flow(params_file)
        print(json.dumps(out, indent=1, sort_keys=True))
        return 0
    cfg = config(params_file)  # the request flows read it themselves, in their run
    store = open_store(cfg)
    if args.group == "ledger" and args.action == "show":
        for entry in store.entries():
            print(json.dumps(entry, sort_keys=True))
        return 0
    if args.group == "ledger":
        problems = store.verify(load_base)
        print("\n".join(problems) if problems else
              f"ledger whole: {len(store.entries())} entries, every version replays to its digest")
        return 1 if problems else 0
    from lib.core.models import save_model

    model = store.replay(load_base(), upto=args.seq)
    tokenizer = load_tokenizer(str(CAUSAL_FINETUNED))
    save_model(model, tokenizer, Path(args.out))
    print(f"version {store.head().seq if args.seq is None else args.seq} ({model_digest(model)[:12]}) -> {args.out}")
    return 0


def cli(argv: list[str] | None = None) -> int:
    """`unlearn ...`: bad input gives one line on stderr and exit code 2."""
    args = _parser().parse_args(argv)
    try:
        return run(args, params_path())
    except input_errors() as err:
        print(f"error: {error_line(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(cli())
