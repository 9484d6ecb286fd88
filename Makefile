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
CDK_VERSION := 2.1148.1
# The CDK CLI asks no one for versions, notices or telemetry; synthesizing needs no credentials
# (the stack is environment-agnostic), so synth does not even look for instance credentials.
CDK_ENV := CDK_DISABLE_VERSION_CHECK=1 CDK_DISABLE_CLI_TELEMETRY=true
CDK_SYNTH_ENV := $(CDK_ENV) AWS_EC2_METADATA_DISABLED=true
CDK_FLAGS := --no-notices --no-version-reporting
CDK_ARGS ?=
SYNTH_CHECK_OUT := .cache/synth-check
export PATH := $(CURDIR)/$(BIN):$(PATH)
export OPENBLAS_NUM_THREADS ?= 1

.PHONY: help setup dev test browser lint fmt typecheck pytest bench bench-e2e layers synth deploy destroy clean cdk-cli synth-check bootstrap smoke

help:
	@echo "make dev    - run the local stack (sets up what is missing)"
	@echo "make test   - run the whole test suite (sets up what is missing)"
	@echo "make bench  - engine benchmarks;  make bench-e2e - end-to-end benchmarks"
	@echo "make lint   - ruff + mypy;        make layers / synth / deploy / destroy"
	@echo "make smoke  - the e2e tests against a deployed API (LCI_ENDPOINT + LCI_API_KEY)"

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@test -x $(PY) || { echo "creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m layers.fontcache
	@touch $(STAMP)

setup: $(STAMP)

# Order-only: a Python dependency change does not reinstall the (pinned) CLI.
$(CDK): | $(STAMP)
	@mkdir -p $(CDK_DIR)
	cd $(CDK_DIR) && $(CURDIR)/$(BIN)/npm install --silent --no-audit --no-fund --prefix . 'aws-cdk@$(CDK_VERSION)'

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

test: $(STAMP) $(CDK) browser lint pytest synth-check

# The playground's browser test (tests/e2e/test_playground.py) drives Debian's chromium through
# its chromedriver: installed here when missing and run as root; elsewhere the test skips and
# says so. Nothing downloads a browser or a driver of its own.
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing chromium + chromium-driver (the playground's browser test)"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null \
	    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	         apt-get install -y -qq chromium chromium-driver >/dev/null; } \
	    || echo "warning: chromium could not be installed: the browser test will skip"; \
	else echo "note: no chromium and not root: the playground's browser test will skip"; fi

bench: $(STAMP)
	$(PY) -m benchmarks.engine

bench-e2e: $(STAMP)
	$(PY) -m benchmarks.e2e

layers: $(STAMP)
	$(PY) -m layers.build --report

# Stage and every other setting: CDK context, e.g. `make deploy CDK_ARGS="-c stage=prod"`.
synth: $(STAMP) $(CDK)
	$(CDK_SYNTH_ENV) $(CDK) synth --quiet $(CDK_FLAGS) $(CDK_ARGS)

# Once per account and region; `CDK_ARGS=aws://<account>/<region>` picks them explicitly.
bootstrap: $(STAMP) $(CDK)
	$(CDK_ENV) $(CDK) bootstrap $(CDK_FLAGS) $(CDK_ARGS)

deploy: $(STAMP) $(CDK)
	$(CDK_ENV) $(CDK) deploy --require-approval broadening $(CDK_FLAGS) $(CDK_ARGS)

destroy: $(STAMP) $(CDK)
	$(CDK_ENV) $(CDK) destroy $(CDK_FLAGS) $(CDK_ARGS)

# What `make test` proves about the deployment: the CDK CLI synthesizes with no AWS credentials
# and no Docker, cdk-nag (AwsSolutions) reports nothing unacknowledged, cfn-lint finds no error.
# The small `ci` layer profile keeps it fast; the stack is otherwise the default one.
synth-check: $(STAMP) $(CDK)
	@rm -rf $(SYNTH_CHECK_OUT)
	env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_SESSION_TOKEN -u AWS_PROFILE \
	  AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_CONFIG_FILE=/dev/null $(CDK_SYNTH_ENV) \
	  $(CDK) synth --quiet $(CDK_FLAGS) --output $(SYNTH_CHECK_OUT) -c layersProfile=ci
	$(BIN)/cfn-lint --ignore-checks W3005 --non-zero-exit-code error $(SYNTH_CHECK_OUT)/*.template.json

# Opt-in, after `make deploy`: the e2e tests against the deployed API (tests/e2e/conftest.py,
# smoke mode); tests that need the local stack itself are skipped. No endpoint: nothing to do.
smoke:
	@if [ -z "$$LCI_ENDPOINT" ] || [ -z "$$LCI_API_KEY" ]; then \
	  echo "make smoke: skipped: set LCI_ENDPOINT and LCI_API_KEY of a deployed stack"; \
	  exit 0; \
	fi; \
	$(MAKE) --no-print-directory $(STAMP) && \
	LCI_SMOKE=1 $(PY) -m pytest tests/e2e -m e2e -q -p no:cacheprovider

clean:
	rm -rf $(VENV) .cache cdk.out .pytest_cache .mypy_cache .ruff_cache
