# ESP — run `make help` for the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml setup.py runtime/rules/pair_scan.py runtime/rules/pair_scan.pxd
	@test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	@touch $(STAMP)

redis: ## Make sure redis-server exists (apt-get install as root)
	@command -v redis-server >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null) \
	      || { echo "could not install redis-server with apt-get"; exit 1; }; \
	    (service redis-server stop || true) >/dev/null 2>&1; \
	  else echo "redis-server is missing: install it (e.g. 'sudo apt-get install redis-server') and re-run"; exit 1; fi; }

chromium: ## Make sure headless Chromium, its driver and a Chinese font exist (the console's browser test)
	@{ [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; } || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver \
	      fonts-wqy-zenhei >/dev/null) || { echo "could not install chromium with apt-get"; exit 1; }; \
	  else echo "chromium is missing: install it (e.g. 'sudo apt-get install chromium chromium-driver fonts-wqy-zenhei') and re-run"; exit 1; fi; }

setup: $(STAMP) redis ## Create the virtualenv, install ESP and redis-server

demo: setup ## Run ESP end to end on synthetic data (local Ray + embedded Redis + Serve), then stop
	$(BIN)/esp demo

# The suite mostly waits (on Ray, Serve and Redis starting, on streams draining): two workers, each
# with its own local Ray, halve its time on two cores. A module's tests stay on one worker
# (--dist loadfile), so a module's platform is started once. TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= 2

test: setup chromium layers docs ## Layer contracts, the docs build, then the whole test suite (unit, integration, e2e, chaos)
	HYPOTHESIS_PROFILE=fixed $(BIN)/python -m pytest -q -p no:cacheprovider --durations=25 -n $(TEST_WORKERS) --dist loadfile tests

unit: setup ## Only the unit tests (no Ray, no Redis)
	$(BIN)/python -m pytest -q tests/unit

DOCS_STAMP := $(VENV)/.installed-docs

$(DOCS_STAMP): pyproject.toml $(STAMP)
	$(BIN)/pip install -q -e ".[dev,docs]"
	@touch $(DOCS_STAMP)

# Not --quiet: it silences the very warnings that --strict turns into a failed build.
docs: $(DOCS_STAMP) ## Build the documentation site into site/ (mkdocs build --strict, offline)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

.PHONY: docs

bench: setup ## Benchmarks; results are written under .esp/bench/
	$(BIN)/esp bench

lint: setup ## ruff check and format check
	$(BIN)/ruff check runtime actors serve tests
	$(BIN)/ruff format --check runtime actors serve tests

layers: setup ## Layer contracts (import-linter) and declared dependencies = imports (deptry)
	$(BIN)/lint-imports
	$(BIN)/deptry .

up: setup ## Start ESP locally and keep it running (esp up)
	$(BIN)/esp up

down: ## Stop what 'make up' started
	$(BIN)/esp down

clean: ## Remove local state (.esp)
	rm -rf .esp

.PHONY: help redis chromium setup demo test unit bench lint layers up down clean
