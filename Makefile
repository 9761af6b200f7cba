.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help install run test test-fast lint fmt bench bench-ir clean

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## .*$$' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install walstream with dev tools

run: $(STAMP) ## Embedded broker + worker + API + demo namespaces (Ctrl-C stops all)
	$(BIN)/walstream run

lint: $(STAMP) ## ruff format --check, ruff check, mypy
	$(BIN)/ruff format --check walstream tests bench
	$(BIN)/ruff check walstream tests bench
	$(BIN)/mypy

fmt: $(STAMP) ## Rewrite: ruff format + ruff check --fix
	$(BIN)/ruff format walstream tests bench
	$(BIN)/ruff check --fix walstream tests bench

test: $(STAMP) ## Everything CI runs: lint, then unit, API and real-broker tests
	$(MAKE) lint
	$(BIN)/pytest

test-fast: $(STAMP) ## Unit and API tests only (no servers)
	$(BIN)/pytest -m 'not integration'

bench: $(STAMP) ## Benchmarks (ratios against baselines measured in the same run)
	$(BIN)/python bench/ingest.py

bench-ir: $(STAMP) ## Ingest cost in instructions per write under callgrind (repeatable; needs valgrind)
	$(BIN)/python bench/ingest_ir.py

clean: ## Remove the venv and local data
	rm -rf $(VENV) .walstream-data .pytest_cache .mypy_cache .ruff_cache
