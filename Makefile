# Miasma gRPC: every target does its own set-up (venv, tools, Docker engine).
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed
TOOLS  := .miasma/tools
BUF    := $(TOOLS)/node_modules/.bin/buf
GEN    := clients/python/src
NODE   := clients/node
NODE_STAMP := $(NODE)/node_modules/.installed
PROTOS := $(shell find protos -name '*.proto')

.PHONY: help run test lint protos check-protos buf-lint typecheck unit clean bench

help:  ## Show the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml clients/python/pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e clients/python -e '.[dev]'
	touch $@

$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $@

$(NODE_STAMP): $(NODE)/package.json $(NODE)/package-lock.json
	cd $(NODE) && npm ci --no-audit --no-fund
	touch $@

$(BUF):
	mkdir -p $(TOOLS)
	npm install --silent --no-audit --no-fund --prefix $(TOOLS) @bufbuild/buf@^1.47 >/dev/null

run: $(STAMP)  ## Run the server (starts a private Docker engine if none is reachable).
	$(PY) -m scripts.run_server $(ARGS)

# Percent of lines and branches `make test` must cover; only ever raised.
COVERAGE_FLOOR := 93

test: lint $(NODE_STAMP)  ## Run everything: lint, type-check, protos drift, unit/integration/e2e on real Docker; coverage.
	rm -rf .miasma/coverage && mkdir -p .miasma/coverage
	$(PY) -m coverage run -m pytest $(PYTEST_ARGS)
	$(PY) -m coverage combine --quiet
	$(PY) -m coverage report --fail-under=$(COVERAGE_FLOOR)

unit: $(STAMP)  ## The fast tests only: unit and integration, no Docker (seconds).
	$(PY) -m pytest tests/unit tests/integration -m "not docker" $(PYTEST_ARGS)

bench: $(BENCH_STAMP)  ## Run every benchmark: tables, bench/results/ (BENCH_ARGS="--only a,c --quick").
	$(PY) -m bench $(BENCH_ARGS)

lint: $(STAMP) check-protos buf-lint typecheck  ## ruff, mypy --strict, buf lint, generated-code drift.
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy miasma_grpc clients/python/src/miasma_client tests scripts bench

buf-lint: $(BUF)
	cd protos && ../$(BUF) lint

protos: $(STAMP) $(NODE_STAMP)  ## Regenerate the Python (and typed .pyi) and Node stubs from protos/.
	$(PY) scripts/gen_protos.py $(GEN) --node $(NODE)/src/gen

check-protos: $(STAMP) $(NODE_STAMP)  ## Fail if the generated stubs drift from protos/.
	$(PY) scripts/gen_protos.py --check $(GEN) --node $(NODE)/src/gen

clean:  ## Remove the venv, tools and local state.
	rm -rf $(VENV) .miasma .pytest_cache .mypy_cache .ruff_cache $(NODE)/node_modules $(NODE)/dist
