# The README's two commands are `make demo` and `make test`; each sets up .venv/ first.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test test-slow test-gpu lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/python tools/train.py configs/default.py --work-dir work_dirs/default

test: setup
	cd $(CURDIR) && $(BIN)/python -m pytest -q -m "not slow and not gpu"

test-slow: setup
	cd $(CURDIR) && $(BIN)/python -m pytest -q -m "slow"

test-gpu: setup
	cd $(CURDIR) && $(BIN)/python -m pytest -q -m "gpu"

lint: setup
	$(BIN)/ruff check recipes zoo tools tests bench configs
	$(BIN)/ruff format --check recipes zoo tools tests bench configs

bench: setup
	$(BIN)/python bench/build_time.py

clean:
	rm -rf work_dirs .pytest_cache
