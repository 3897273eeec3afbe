# Two commands on a fresh machine with python3 and make:
#   make reproduce   # gdflow reproduce all --workers 2 (default size) -> results/report.md
#   make quick       # the smoke size, whole experiments on 2 workers (--spread experiments)
#   make test        # the test suite
# Each creates the virtual environment .venv on first use.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
OUT    ?= results
WORKERS ?= 2

.PHONY: install test reproduce quick lint format benchmarks clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,mnist]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

reproduce: $(STAMP)
	$(BIN)/gdflow reproduce all --workers $(WORKERS) --out $(OUT)

quick: $(STAMP)
	$(BIN)/gdflow reproduce all --quick --workers $(WORKERS) --spread experiments --out $(OUT)

lint: $(STAMP)
	$(BIN)/ruff check gdflow tests benchmarks
	$(BIN)/ruff format --check gdflow tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format gdflow tests benchmarks

benchmarks: $(STAMP)
	for f in benchmarks/*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
