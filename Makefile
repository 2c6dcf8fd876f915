# Every target sets itself up: a fresh machine needs only Python 3.10+ and the package registries.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

CONFIG ?= configs/mnist100.toml
METHOD ?=
SCANS  ?= data/mnist_scans/test
MODEL  ?=
OUT    ?=
ARGS   ?=

.PHONY: setup data train score test lint bench-mnist clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	# The pinned CPU build first: an unpinned torch would pull gigabytes of CUDA packages.
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

data: setup
	$(BIN)/pipeline fetch mnist

train: setup
	$(BIN)/pipeline run --config $(CONFIG) $(if $(METHOD),method.name=$(METHOD)) $(ARGS)

score: setup
	$(BIN)/pipeline score $(SCANS) $(if $(MODEL),--model $(MODEL)) $(if $(OUT),--out $(OUT))

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check pipeline tests

bench-mnist: setup
	$(BIN)/python benchmarks/mnist100.py $(if $(METHODS),--methods $(METHODS)) $(ARGS)

clean:
	rm -rf runs reports cache
