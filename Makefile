# The same commands locally and in CI. A fresh machine needs only python3 (3.11+).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint unit bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/medfed demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

# Test files run in parallel (pytest-xdist), each file whole on one worker, so its
# module-scoped federation is started once; JOBS=1 runs them one after another.
JOBS ?= 3

test: lint
	$(BIN)/pytest -q -n $(JOBS) --dist loadfile --no-loadscope-reorder

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

bench: $(STAMP)
	$(BIN)/python -m benchmarks.dispatch

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
