# The README's two commands are `make demo` and `make test`; each sets up .venv/ first.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test test-slow test-gpu lint bench baselines clean

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
	$(BIN)/ruff check recipes zoo tools tests bench configs experiments
	$(BIN)/ruff format --check recipes zoo tools tests bench configs experiments

# Every baseline's matrix (experiments/*/experiment.py; finished cells are skipped), then docs/baselines.md.
# BASELINES=dinov2_cifar10 for one; SIZE=gpu for the full-size configs; DATA=dir of the archives (../shared/data).
BASELINES ?= dinov2_cifar10 effnet_lite0_cifar10 rfdetr_raccoon
SIZE ?=
DATA ?= $(CURDIR)/../shared/data
baselines: setup
	for b in $(BASELINES); do $(BIN)/python tools/reproduce.py $$b --data-dir $(DATA) --no-docs $(if $(SIZE),--size $(SIZE)) || exit $$?; done
	$(BIN)/python tools/reproduce.py --docs

bench: setup
	$(BIN)/python bench/build_time.py

clean:
	rm -rf work_dirs .pytest_cache
