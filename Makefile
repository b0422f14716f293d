# One-command entry points used by the README's Quick start and by CI.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Install stamps: the package alone (what the main job needs), then the test extra (pytest,
# ruff, PyTorch for the parity tests) or the docs extra on top of it. pip installs without
# compiling bytecode (it would compile all 14,000 modules of the venv, most of them never
# imported: TFDS's dataset builders, sympy, scipy, pip itself) and Python writes the bytecode of
# what is imported the first time it is (about 8 s once, against 43 s for compileall on two
# cores). That needs bytecode writing on, so the recipes run without PYTHONDONTWRITEBYTECODE
# (without bytecode every process would recompile jax and friends: 13 s per import, not 5 s).
unexport PYTHONDONTWRITEBYTECODE
CORE_STAMP := $(VENV)/.installed-core
STAMP := $(VENV)/.installed-test
DOCS_STAMP := $(VENV)/.installed-docs

.PHONY: setup demo analyze test bench bench-data bench-gpu docs clean

VENV_NEW := test -x $(PY) || { $(PYTHON) -m venv $(VENV) && $(PY) -m pip install -q --no-compile --upgrade pip; }

$(CORE_STAMP): pyproject.toml
	$(VENV_NEW)
	$(PY) -m pip install -q --no-compile -e .
	touch $(CORE_STAMP)

# The package and the test extra in one pip call (one resolution) when nothing is installed.
$(STAMP): pyproject.toml
	$(VENV_NEW)
	$(PY) -m pip install -q --no-compile -e '.[test]'
	touch $(CORE_STAMP) $(STAMP)

$(DOCS_STAMP): $(CORE_STAMP)
	$(PY) -m pip install -q --no-compile -e '.[docs]'
	touch $(DOCS_STAMP)

setup: $(CORE_STAMP)

# The main job: U-Net (width 8) with the DIBE loss on the embedded synthetic crack set
# (96x96, FG:BG 1:150, 384/128 images), 12 epochs, evaluated every 2.
demo: $(CORE_STAMP)
	$(VENV)/bin/dibe-jax train --dataset synthetic_cracks/r150_96 --data-dir results/tfds \
	  --model unet --loss dibe --epochs 12 --batch-size 16 --eval-every 2 \
	  --set model.width=8 --workdir results/demo --overwrite

analyze: $(CORE_STAMP)
	$(VENV)/bin/dibe-jax analyze --out results/analysis

test: $(STAMP)
	$(VENV)/bin/ruff check dibe_jax tests benchmarks experiments scripts
	$(VENV)/bin/ruff format --check dibe_jax tests benchmarks experiments scripts
	$(PY) -m pytest -q -n 2 --dist worksteal -m "not slow" --durations=25

# The long end-to-end runs that `make test` leaves out (@pytest.mark.slow: the main job, the
# notebook, SIGINT and SIGKILL resumes, multi-process and fake-device runs, real searches,
# quality trainings); CI runs both targets.
.PHONY: test-slow
test-slow: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist worksteal -m slow --durations=25

# Benchmarks need the PyTorch CPU wheel (never a runtime dependency).
bench: $(STAMP)
	$(PY) -m pip install -q --no-compile torch==2.13.0
	$(PY) -m benchmarks.losses --out benchmarks/results/losses_cpu.md
	$(PY) -m benchmarks.train --out benchmarks/results/train_cpu.md

# The GPU benchmarks (benchmarks/gpu.py), about 7 minutes on one H100/H200:
# losses, U-Net step bf16/fp32 against PyTorch eager and torch.compile, data path, CrackForest
# training with DIBE and FT. Runs with the machine's own python3 and packages (no venv: the
# GPU machine has none) and the source tree on PYTHONPATH; without a GPU it runs a tiny CPU
# mode that says so (here: `make bench-gpu PYTHON=.venv/bin/python`). The CFD training needs
# bench_data/crackforest (`make bench-data`); the GPU command is in benchmarks/gpu.py.
BENCH_GPU_ARGS ?=
bench-gpu:
	PYTHONPATH=.$${PYTHONPATH:+:$$PYTHONPATH} $(PYTHON) -m benchmarks.gpu $(BENCH_GPU_ARGS)

# CrackForest may not be committed: copy the labelled images into the git-ignored bench_data/.
CFD_SRC ?= ../shared/data/crackforest
bench-data:
	mkdir -p bench_data/crackforest/image bench_data/crackforest/groundTruth
	cp $(CFD_SRC)/groundTruth/*.mat bench_data/crackforest/groundTruth/
	for f in $(CFD_SRC)/groundTruth/*.mat; do \
	  s=$$(basename $$f .mat); cp $(CFD_SRC)/image/$$s.jpg bench_data/crackforest/image/; done

# The documentation (docs/): Sphinx + MyST, warnings are errors; HTML in docs/_build/html.
docs: $(DOCS_STAMP)
	$(VENV)/bin/sphinx-build -W --keep-going -q -b html docs docs/_build/html

clean:
	rm -rf $(VENV) results docs/_build
