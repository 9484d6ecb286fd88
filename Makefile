# Two commands matter: `make dev` (local stack) and `make test` (whole suite).
# Both set up whatever is missing first: virtualenv, Python deps, Node + the pinned CDK CLI.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The Lambda runtime is python3.13: prefer it for the virtualenv, fall back to 3.12 / python3.
PYTHON ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3.13) \
                     $(shell command -v python3.13 2>/dev/null) \
                     $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12) \
                     $(shell command -v python3.12 2>/dev/null) \
                     $(shell command -v python3 2>/dev/null))
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
CDK_DIR := .cache/cdk-cli
CDK := $(CDK_DIR)/node_modules/.bin/cdk
export PATH := $(CURDIR)/$(BIN):$(PATH)
export OPENBLAS_NUM_THREADS ?= 1

.PHONY: help setup dev test lint fmt typecheck pytest bench bench-e2e layers synth deploy destroy clean cdk-cli

help:
	@echo "make dev    - run the local stack (sets up what is missing)"
	@echo "make test   - run the whole test suite (sets up what is missing)"
	@echo "make bench  - engine benchmarks;  make bench-e2e - end-to-end benchmarks"
	@echo "make lint   - ruff + mypy;        make layers / synth / deploy / destroy"

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@test -x $(PY) || { echo "creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@touch $(STAMP)

setup: $(STAMP)

$(CDK): $(STAMP)
	@mkdir -p $(CDK_DIR)
	cd $(CDK_DIR) && $(CURDIR)/$(BIN)/npm install --silent --no-audit --no-fund --prefix . 'aws-cdk@^2'

cdk-cli: $(CDK)

dev: $(STAMP)
	$(PY) -m local

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(STAMP)
	$(BIN)/mypy

# pytest exits 5 when nothing is collected: that is not a failure of the suite.
pytest: $(STAMP)
	$(PY) -m pytest; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

test: $(STAMP) $(CDK) lint pytest

bench: $(STAMP)
	$(PY) -m benchmarks.engine

bench-e2e: $(STAMP)
	$(PY) -m benchmarks.e2e

layers: $(STAMP)
	$(PY) -m layers.build --report

synth: $(STAMP) $(CDK)
	$(CDK) synth --quiet

deploy: $(STAMP) $(CDK)
	$(CDK) deploy --require-approval broadening

destroy: $(STAMP) $(CDK)
	$(CDK) destroy

clean:
	rm -rf $(VENV) .cache cdk.out .pytest_cache .mypy_cache .ruff_cache
