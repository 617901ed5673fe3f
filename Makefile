# Two commands do everything on a fresh machine:
#   make demo   set up the environment and run the pipeline on its offline default (dvc repro)
#   make test   set up the environment and run the tests (what .ci/run calls)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Where TREC DL data lives (the demo profile reads it; tests read ../shared/data).
export PATH := $(CURDIR)/$(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
# colbert-ai compiles C++ extensions at first use: keep them with the project, cached.
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.cache/torch_extensions
# Extra pip options, e.g. PIP_ARGS="--extra-index-url <PyTorch CPU wheel index>" where
# torch==2.13.0+cpu is not already available locally.
PIP_ARGS ?=

.PHONY: setup setup-gpu test test-all lint demo demo-check lock clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements/cpu.lock pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/pip install --no-deps $(PIP_ARGS) -r requirements/cpu.lock
	$(BIN)/pip install --no-deps --quiet -e .
	$(BIN)/python -c 'import vllm, pyserini, colbert, faiss, ir_measures, dvc, pipeline' 2>/dev/null \
	  || { echo "environment check failed: an import is broken" >&2; exit 1; }
	touch $@

# GPU servers (CUDA, internet): the CUDA vllm package and a freely resolved torch.
setup-gpu:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/pip install $(PIP_ARGS) -r requirements/gpu.in
	$(BIN)/pip install --no-deps -e .

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: setup lint
	$(BIN)/python -m pytest -m "not slow and not demo" -q

test-all: setup lint
	$(BIN)/python -m pytest -m "not demo" -q

demo: setup
	$(BIN)/dvc repro
	$(BIN)/dvc metrics show

# After `make demo`: a second repro is a no-op, a param change re-runs exactly what follows.
demo-check: setup
	$(BIN)/python -m pytest -m demo -q

# Re-resolve the CPU environment from requirements/cpu.in into requirements/cpu.lock.
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet --upgrade pip
	.venv-lock/bin/pip install torch==2.13.0 && .venv-lock/bin/pip install -r requirements/cpu.in
	.venv-lock/bin/pip uninstall -y torchvision torchaudio torchcodec triton
	{ sed -n '1,4p' requirements/cpu.lock; .venv-lock/bin/pip freeze --exclude-editable; } > requirements/cpu.lock.new
	mv requirements/cpu.lock.new requirements/cpu.lock && rm -rf .venv-lock

clean:
	rm -rf $(VENV) .cache .pytest_cache
