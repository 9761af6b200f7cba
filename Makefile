.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help install system-deps run test test-fast lint fmt bench bench-replication bench-ir clean

help: ## Show this help
	@grep -E '^[a-zA-Z_-]+:.*?## .*$$' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install walstream with dev tools

# Debian packages the tests run for real: PostgreSQL (kv target), memcached (cross-region
# replication, issue 17), and the openssl CLI (a test certificate for the http target's TLS).
# Installed when missing, as root.
system-deps: ## Install the servers and tools the tests use (PostgreSQL, memcached, openssl) when missing (needs root)
	@if ! command -v openssl >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null; \
	  else \
	    echo "the openssl CLI is missing: sudo apt-get install openssl" >&2; exit 1; \
	  fi; \
	fi
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	  else \
	    echo "PostgreSQL server binaries are missing: sudo apt-get install postgresql" >&2; exit 1; \
	  fi; \
	fi
	@if ! command -v memcached >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq memcached >/dev/null; \
	  else \
	    echo "memcached is missing: sudo apt-get install memcached" >&2; exit 1; \
	  fi; \
	fi

# The namespaces `make run` applies at start (a folder of TOML definitions).
NAMESPACES ?= topology/namespaces

# `python -m` from here: this checkout's code, even when the venv's `walstream` script was
# installed (editable) from another checkout (a clean clone run with a shared VENV=...).
run: $(STAMP) ## Embedded broker + worker + API + demo namespaces, supervised (Ctrl-C stops all)
	$(BIN)/python -m walstream run --namespaces $(NAMESPACES)

lint: $(STAMP) ## ruff format --check, ruff check, mypy
	$(BIN)/ruff format --check walstream tests bench
	$(BIN)/ruff check walstream tests bench
	$(BIN)/mypy

fmt: $(STAMP) ## Rewrite: ruff format + ruff check --fix
	$(BIN)/ruff format walstream tests bench
	$(BIN)/ruff check --fix walstream tests bench

test: $(STAMP) system-deps ## Everything CI runs: lint, then unit, API and real-server tests, coverage floors
	$(MAKE) lint
	$(BIN)/pytest --cov --cov-report=term
	$(BIN)/coverage report --include='walstream/core/*' --fail-under=100 --show-missing

test-fast: $(STAMP) ## Unit and API tests only (no servers)
	$(BIN)/pytest -m 'not integration'

bench: $(STAMP) ## Benchmarks (ratios against baselines measured in the same run)
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/retry.py
	$(BIN)/python bench/delay.py
	$(BIN)/python bench/ordering.py
	$(BIN)/python bench/mutations.py
	$(MAKE) bench-replication

bench-replication: $(STAMP) system-deps ## Replication lag over 3 regions and a region writer's rate (real memcached)
	$(BIN)/python bench/replication.py

bench-ir: $(STAMP) ## Ingest cost in instructions per write under callgrind (repeatable; needs valgrind)
	$(BIN)/python bench/ingest_ir.py

clean: ## Remove the venv and local data
	rm -rf $(VENV) .walstream-data .pytest_cache .mypy_cache .ruff_cache .coverage
