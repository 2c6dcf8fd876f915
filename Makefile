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

# Your own data, no config: make train SCANS=folder [LABELS=csv] [POSITIVE=class[,class] | HEALTHY=class] [MINUTES=n]
# [LABELS_PER_CLASS=n] [LABEL_COLUMN=name] [FILE_COLUMN=name] [GROUP_COLUMN=name] [VERDICTS=csv] [INCLUDE=glob]
# The loop: make score SCANS=new_folder; make suggest [N=20]; label; make train SCANS=folder VERDICTS=verdicts.csv
LABELS ?=
POSITIVE ?=
HEALTHY ?=
MINUTES ?=
LABELS_PER_CLASS ?=
LABEL_COLUMN ?=
FILE_COLUMN ?=
GROUP_COLUMN ?=
VERDICTS ?=
INCLUDE ?=
N ?= 20
OWN_DATA = $(filter command line environment,$(origin SCANS))

.PHONY: setup data train plan score suggest test lint bench bench-mnist bench-volumes bench-real clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	# The pinned CPU build first: an unpinned torch would pull gigabytes of CUDA packages.
	$(BIN)/pip install torch==2.13.0
	# The Ray extra too, so that the tests of the Ray scoring engine run; psutil for `make bench`.
	$(BIN)/pip install -e '.[dev,ray,bench]'
	touch $(STAMP)

setup: $(STAMP)

data: setup
	$(BIN)/pipeline fetch mnist

# Quoted: folder and class names may hold spaces (POSITIVE="No finding")
OWN_ARGS = $(if $(OWN_DATA),--scans "$(SCANS)" $(if $(filter command line environment,$(origin CONFIG)),--config $(CONFIG)),--config $(CONFIG)) \
	$(if $(LABELS),--labels "$(LABELS)") $(if $(POSITIVE),--positive "$(POSITIVE)") $(if $(HEALTHY),--healthy "$(HEALTHY)") \
	$(if $(MINUTES),--minutes $(MINUTES)) $(if $(LABELS_PER_CLASS),--labels-per-class $(LABELS_PER_CLASS)) \
	$(if $(LABEL_COLUMN),--label-column "$(LABEL_COLUMN)") $(if $(FILE_COLUMN),--file-column "$(FILE_COLUMN)") \
	$(if $(GROUP_COLUMN),--group-column "$(GROUP_COLUMN)") $(if $(VERDICTS),--extra-labels "$(VERDICTS)") \
	$(if $(INCLUDE),--include "$(INCLUDE)") $(if $(METHOD),method.name=$(METHOD)) $(ARGS)

train: setup
	$(BIN)/pipeline run $(OWN_ARGS)

plan: setup
	$(BIN)/pipeline plan $(OWN_ARGS)

score: setup
	$(BIN)/pipeline score "$(SCANS)" $(if $(MODEL),--model "$(MODEL)") $(if $(OUT),--out "$(OUT)") $(if $(LABELS),--labels "$(LABELS)")

# The unlabelled scans of a run's pool to label next (MODEL=run, else the latest): to_label.csv and a page
suggest: setup
	$(BIN)/pipeline suggest $(if $(MODEL),"$(MODEL)") --n $(N) $(if $(OUT),--out "$(OUT)")

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check pipeline tests

# Speed and memory against the plain alternatives (benchmarks/performance.md); PARTS= picks parts.
bench: setup
	$(BIN)/python -m benchmarks.performance $(if $(PARTS),--parts $(PARTS)) $(if $(METHODS),--methods $(METHODS)) $(ARGS)

bench-mnist: setup
	$(BIN)/python -m benchmarks.mnist100 $(if $(METHODS),--methods $(METHODS)) $(ARGS)

# Supervised against SSL on the synthetic volumes, PneumoniaMNIST and AdrenalMNIST3D.
bench-volumes: setup
	$(BIN)/python -m benchmarks.volumes $(if $(DATASETS),--datasets $(DATASETS)) $(if $(METHODS),--methods $(METHODS)) $(ARGS)

# Default SSL method against supervised on every development-panel set, 3 label draws (benchmarks/real.md).
bench-real: setup
	$(BIN)/python -m benchmarks.real $(if $(SETS),--sets $(SETS)) $(if $(DRAWS),--draws $(DRAWS)) $(ARGS)

clean:
	rm -rf runs reports cache
