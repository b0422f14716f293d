# One-command entry points used by the README's Quick start and by CI.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/dibe-jax analyze --out results/analysis

test: $(STAMP)
	$(VENV)/bin/ruff check dibe_jax tests benchmarks experiments
	$(PY) -m pytest -q -n 2

bench: $(STAMP)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) benchmarks/losses.py

clean:
	rm -rf $(VENV) results
