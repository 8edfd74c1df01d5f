# marketdata: `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)
SYMBOLS ?= BTC-USD
INTERVAL ?= 1d
PROVIDER ?=
PYTEST_ARGS ?=
MUTANTS ?=
BENCH ?=
DRILLS ?=
# the top size of make bench-scale (1M is always measured beside it)
SCALE_ROWS ?= 10000000
# SCALE_KEEP=1: keep bench-scale's top-size database, or reuse the one a run before kept
SCALE_KEEP ?=

.DEFAULT_GOAL := help
.PHONY: help install ingest test lint fmt typecheck check db-upgrade bench bench-startup bench-scale bench-workers clean deploy-files deploy-verify pip-audit mutation drills

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install marketdata with its dev tools

ingest: $(STAMP) ## Ingest SYMBOLS (default BTC-USD) into the embedded SQLite database
	$(BIN)/marketdata ingest --symbols $(SYMBOLS) --interval $(INTERVAL) $(if $(PROVIDER),--provider $(PROVIDER))

db-upgrade: $(STAMP) ## Apply migrations to DATABASE_URL (or the embedded database)
	$(BIN)/marketdata db upgrade

test: $(STAMP) ## Run the whole test suite (needs PostgreSQL and Redis; see README)
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP) ## ruff lint and format check, bandit security lint
	$(BIN)/ruff check src tests migrations
	$(BIN)/ruff format --check src tests migrations
	$(BIN)/bandit -q -c pyproject.toml -r src migrations

pip-audit: $(STAMP) ## Known vulnerabilities in the installed dependencies (needs PyPI's advisory data)
	$(BIN)/pip-audit --skip-editable --strict --progress-spinner off

fmt: $(STAMP) ## Format and fix what ruff can
	$(BIN)/ruff format src tests migrations
	$(BIN)/ruff check --fix src tests migrations

typecheck: $(STAMP) ## mypy (strict) on src
	$(BIN)/mypy

check: lint typecheck test ## Everything CI runs

bench: $(STAMP) ## Benchmarks (PostgreSQL, Redis at TEST_*_URL); ratios; BENCH=cache picks some
	$(BIN)/python -m tests.benchmarks $(BENCH)

drills: $(STAMP) ## Fault drills against real PostgreSQL and SQLite (long, not in make test): a table; DRILLS=provider picks some
	nice $(BIN)/python -m tests.drills $(DRILLS)

bench-startup: $(STAMP) ## Read commands' start-up vs a bare Typer app's --help (SQLite only)
	$(BIN)/python -m tests.benchmarks.startup

bench-scale: $(STAMP) ## Reads, ingest, prune and bytes at 1M and SCALE_ROWS 1m candles (long; not in test; SCALE_KEEP=1 keeps/reuses the top one)
	nice -n 5 $(BIN)/python -m tests.benchmarks.scale --rows $(SCALE_ROWS) $(if $(SCALE_KEEP),--keep)

bench-workers: $(STAMP) ## Worker fleets: fills and no-op ticks by 1 ingest vs 1/2/4 workers (BENCH_MARKETS=10000)
	nice -n 10 $(BIN)/python -m tests.benchmarks.workers

deploy-files: $(STAMP) ## Render deploy/ (units, env example) from the code, for /opt/marketdata
	env -u INGESTION_CRON_EXPRESSION $(BIN)/marketdata --env-file deploy/marketdata.env.example \
		schedule render --exec /opt/marketdata/bin/marketdata --output deploy

deploy-verify: $(STAMP) ## systemd-analyze verify + security, cron checks, the runbook's commands
	$(BIN)/pytest -q tests/ops

mutation: $(STAMP) ## Mutation testing of the data path (mutmut; long, not in make test); MUTATION.md
	nice -n 10 $(BIN)/python -m tests.mutation $(MUTANTS)

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis mutants build dist src/*.egg-info
