# Two commands on a fresh machine (see README.md):
#   make run    set up .venv, then train WAGE 2-8-8-8 on the embedded digits data set
#   make test   set up .venv, then run the whole test suite (unit and parity tests)
#   make docs   the guide and the API reference, rendered into docs/_build/html (warnings are errors)
#   make test-fast   the inner-loop subset (about 4 minutes on 2 cores; the whole suite about 7): everything not marked slow
PY := .venv/bin/python
export TORCH_EXTENSIONS_DIR := $(CURDIR)/.venv/torch_extensions
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: setup run test test-fast lint bench parity-report docs

setup: .venv/.setup-done

.venv/.setup-done: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $@

# A fresh default run each time: the previous one is moved aside to runs/<name>.old-<time>, never deleted.
run: setup
	$(PY) -m wage_train --overwrite

# pytest-xdist workers: one per core, at least 3 (much of the suite is single-threaded XLA compilation, so a
# third worker fills the gaps on 2 cores) and at most 8 (each worker holds JAX and torch in memory).
WORKERS ?= $(shell python3 -c "import os; print(min(8, max(3, len(os.sched_getaffinity(0)))))")

test: setup
	$(PY) -m pytest -q -n $(WORKERS) --dist loadfile --durations=10

test-fast: setup
	$(PY) -m pytest -q -n $(WORKERS) --dist loadfile --durations=10 -m "not slow"

lint: setup
	$(PY) -m ruff check .

# The test suite builds the same (tests/test_docs_build.py).
docs: setup
	$(PY) -m sphinx -W --keep-going -q -b html docs docs/_build/html
	@echo "docs/_build/html/index.html"

parity-report: setup
	$(PY) -m wage_parity.report

bench: setup
	$(PY) -m benchmarks --out runs/bench
