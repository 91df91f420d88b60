"""Build a throw-away git+DVC copy of this project with a tiny config (for integration tests)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
PROJECT_FILES = ["lib", "tasks", "flows", "dvc.yaml", "params.yaml", "pyproject.toml", ".gitignore", ".dvcignore"]


def tiny_params(base: dict[str, Any]) -> dict[str, Any]:
    """params.yaml shrunk to seconds: tiny random BERT, a handful of emails and secrets."""
    params = yaml.safe_load(yaml.safe_dump(base))
    params["compute"]["threads"] = 1  # tiny models run fastest on one thread; the other core runs the other tests
    params["data"].update(n_background_emails=80, secrets_per_category={"TEL": 3, "NAME": 3, "RANDOM": 2},
                          repetitions={"TEL": [2], "NAME": [2], "RANDOM": [2]}, n_controls_per_category=20)
    params["finetune"].update(model="tiny_model", epochs=1, batch_size=8)
    params["memorized"]["thresholds"] = {"TEL": -1, "NAME": -1, "RANDOM": 1.0e12}  # everything counts as memorized
    params["attribution"]["shard_size"] = 4
    params["methods"]["snku"].update(k=5, top_m=3)
    params["methods"]["random"]["k"] = 5
    params["methods"]["gare"].update(k=5, epochs=2)
    params["methods"]["depn"]["k"] = 5
    params["methods"]["apneap"]["k"] = 5
    params["methods"]["npo"].update(max_steps=3, batch_size=4)
    params["ig"]["steps"] = 3
    params["evaluate"]["max_valid_texts"] = 20
    # a subset of each track's methods: every stage template runs; each method's own behaviour is unit-tested on
    # tiny models of both families (tests/test_method_contract*.py), so more rows would only add process starts
    params["pipeline"]["methods"] = ["ftm", "gare", "depn", "snku", "random"]
    params["experiments"].update(seeds=[0, 1], budget={"methods": ["snku", "depn"], "ks": [3, 6]},
                                 noise={"category": "TEL", "k": 4, "alpha": 0.99, "sigmas": [0.05, 0.2]},
                                 decay={"category": "TEL", "k": 4, "sigma": 0.05, "alphas": [0.9, 0.99]},
                                 scoring=["hyb", "sum"])
    # one calibrated method (DEPN: no training per trial, and no other test's param change reruns it)
    params["calibration"].update(n_trials=3, methods=["depn"], spaces={"depn": {"k": {"low": 1, "high": 10}}})
    return tiny_bench(tiny_causal(params))


SHARED_DATASETS = ROOT.parent / "shared" / "datasets"  # where tests and CI find the TOFU / LUME copies


def tiny_bench(params: dict[str, Any]) -> dict[str, Any]:
    """The benchmark track shrunk: the tiny LLaMA on a few TOFU / LUME rows, three methods."""
    bench = params["benchmarks"]
    bench.update(data_root=str(SHARED_DATASETS), pipeline=["ga", "simu", "sp"], batch_size=8,
                 suites=["tofu", "lume"], runs={"tofu_forget01": {"suite": "tofu"}, "lume": {"suite": "lume"}})
    bench["tofu"].update(n_retain_authors=1, n_retain_eval=4, n_real_authors=3, n_world_facts=3, max_len=48,
                         max_new=6, finetune={**bench["tofu"]["finetune"], "epochs": 2, "learning_rate": 1.0e-2})
    bench["lume"].update(n_forget=12, n_retain=12, max_len=48, max_new=6,
                         finetune={**bench["lume"]["finetune"], "epochs": 2, "learning_rate": 1.0e-2})
    bench["neighbours"].update(mlm="tiny_model", mlm_epochs=1)
    m = bench["methods"] = yaml.safe_load(yaml.safe_dump(params["causal"]["methods"]))  # the merged, shrunk copy
    m["simu"].update(steps=2, max_targets=2, max_epochs=2, learning_rate=1.0e-2)
    m["sp"].update(max_tokens=2000, max_steps=3, ffn_fraction=0.1)
    # no benchmark calibration here (calibration_report in tests/test_pipeline.py would pull the benchmark track in);
    # tests/test_pipeline_bench.py lists GA
    bench["calibration"].update(n_trials=2, methods=[],
                                spaces={"ga": {"learning_rate": {"low": 1.0e-3, "high": 1.0e-1, "log": True},
                                               "max_steps": {"low": 1, "high": 4}}})
    return params


def tiny_causal(params: dict[str, Any]) -> dict[str, Any]:
    """The causal track shrunk: a tiny random LLaMA that memorizes a few private emails in seconds."""
    causal = params["causal"]
    causal["model"] = "tiny_causal"
    causal["data"].update(n_background_emails=40, secrets_per_category={"TEL": 3, "NAME": 2, "RANDOM": 1},
                          copies=[6], valid_fraction=0.2, max_len=24, n_public=6, public_words=16)
    causal["finetune"].update(epochs=12, learning_rate=1.0e-2, batch_size=8)
    causal["memorized"].update(n_forget=3, margin=-1.0, n_valid=6, el_n=4, batch_size=8)
    causal["neighbours"].update(mlm="tiny_model", mlm_epochs=1)
    causal["evaluate"].update(el_n=4, example_tokens=6)
    m = causal["methods"]
    m["neumuter"].update(passes=4, check_every=2, batch_size=4)
    m["ga"].update(max_steps=4, learning_rate=1.0e-2)
    m["sga"].update(max_steps=4, learning_rate=1.0e-2)
    m["ta"].update(finetune_steps=3, finetune_lr=1.0e-2, tau_max=5.0)
    m["snku"].update(k=4, top_m=3)  # K doubles 4, 8, ... 74 (every neuron) until the stop rule holds
    m["ig"].update(steps=2, n_start=4, n_max=64, max_targets=4)  # pinned: the tiny IG rows were sized with 4 targets
    m["npo"].update(max_steps=4, learning_rate=1.0e-2)
    causal["retain_samples"] = 8
    causal["neurons"].update(ig_max_targets=1, ig={"steps": 2})
    causal["pipeline"] = ["neumuter", "ga", "snku", "ig"]  # SIMU and SP run in tiny_bench; SNKU: the statistics
    causal["calibration"].update(n_trials=2, methods=["ga"],  # a trial: a few steps of GA on a copy
                                 spaces={"ga": {"learning_rate": {"low": 1.0e-3, "high": 1.0e-1, "log": True},
                                                "max_steps": {"low": 1, "high": 4}}})
    return params


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command in the repo with the venv's tools first on PATH."""
    full_env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **(env or {})}
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, check=check)


def make_repo(dest: Path, overrides: dict[str, Any] | None = None) -> Path:
    """Copy the project into `dest`, add a tiny model and tiny params (dotted keys of `overrides` set on them),
    commit it."""
    from tests.tiny_models import save_tiny_bert_checkpoint, save_tiny_causal_checkpoint

    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = ROOT / name
        (shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
         if src.is_dir() else shutil.copy2(src, dest / name))
    save_tiny_bert_checkpoint(dest / "tiny_model")
    save_tiny_causal_checkpoint(dest / "tiny_causal")
    params = tiny_params(yaml.safe_load((ROOT / "params.yaml").read_text()))
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for dotted, value in (overrides or {}).items():
        set_param(dest, dotted, value)
    run(["git", "init", "-q"], dest)
    run(["dvc", "init", "-q"], dest)
    run(["dvc", "config", "core.analytics", "false"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "-c", "user.name=test", "-c", "user.email=test@localhost", "commit", "-qm", "tiny"], dest)
    return dest


def set_param(repo: Path, dotted: str, value: Any) -> None:
    """Change one key of the repo's params.yaml."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    node = params
    *parents, leaf = dotted.split(".")
    for key in parents:
        node = node[key]
    node[leaf] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
