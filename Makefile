# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv the first time.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## Show the example publication's selection for its bundled week (no server, no network).
demo: $(STAMP)
	$(BIN)/digest --config examples/digest.toml build --format json --since 2026-11-16 --until 2026-11-22

## Lint, type-check and run the tests.
test: $(STAMP)
	$(BIN)/ruff check digest tests bench
	$(BIN)/ruff format --check digest tests bench
	$(BIN)/mypy
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check --fix digest tests bench
	$(BIN)/ruff format digest tests bench

## Benchmarks; figures are printed, never asserted in unit tests.
bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) dist build .pytest_cache .mypy_cache .ruff_cache .hypothesis examples/.digest
