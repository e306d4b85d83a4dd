# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Tests and CI read the real datasets from ../shared/data (never copied into the repo). Elsewhere,
# unseen downloads them from their official sources into its cache.
DATA_DIR ?= $(abspath ../shared/data)
ifneq ($(wildcard $(DATA_DIR)),)
export UNSEEN_DATA_DIR ?= $(DATA_DIR)
endif

.PHONY: install dev demo test test-slow bench lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.dev: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed
dev: $(VENV)/.dev

# The demo needs no network and no data folder: scikit-learn ships the breast-cancer set.
demo: install
	$(VENV)/bin/unseen demo

test: dev
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q -m "not slow"

test-slow: dev
	$(PY) -m pytest -q -m slow

bench: dev
	$(PY) benchmarks/fl_mnist.py

lint: dev
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
