# Two entry points: `make demo` and `make test`, each working on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Datasets for tests/benchmarks live beside the checkout; library code never assumes this path.
DATA_DIR ?= $(abspath ../shared/data)
export RNNKIT_DATA_DIR ?= $(if $(wildcard $(DATA_DIR)),$(DATA_DIR),)

.PHONY: demo test install bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU build of torch first: an unpinned torch would pull several GB of CUDA wheels.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/rnnkit demo --out runs/demo-$$(date +%Y%m%d-%H%M%S)

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=8

bench: $(STAMP)
	$(BIN)/python benchmarks/surnames.py --data-dir $(DATA_DIR)

clean:
	rm -rf $(VENV) runs .pytest_cache
