# The two commands a newcomer needs: `make run` and `make test`. Both install what they need.
# `make run` starts the stack services that are not running and stops them again on Ctrl-C;
# `make up` / `make down` keep the stack up across runs. `make start` / `make stop` / `make logs`
# run the platform in the background. RUN_ARGS passes options to it (`python -m streaming.run -h`).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# The operator dashboard (dashboard/): `npm ci` from its lockfile and the production build that
# `ot api` serves at /. Rebuilt only when the lockfile or a source changed.
DASHBOARD_STAMP := dashboard/dist/.build-stamp
DASHBOARD_SOURCES := $(shell find dashboard/src -type f 2>/dev/null) dashboard/index.html \
	dashboard/vite.config.ts dashboard/tsconfig.json dashboard/package.json

.PHONY: setup lock run start stop logs test test-drills test-fast lint format bench drills up up3 down status clean

setup: $(STAMP) $(DASHBOARD_STAMP)

# Re-install only when the project definition or the lock changed: fast and idempotent otherwise.
# Exactly the locked versions (requirements.lock), so a new machine next month gets the same set.
$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[dev]'
	@touch $(STAMP)

$(DASHBOARD_STAMP): dashboard/package-lock.json $(DASHBOARD_SOURCES)
	@command -v npm >/dev/null || { echo "make setup: the dashboard needs Node.js 20+ and npm (apt-get install nodejs npm)"; exit 2; }
	@cd dashboard && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build >/dev/null
	@touch $(DASHBOARD_STAMP)

# Resolve pyproject.toml afresh into requirements.lock (an upgrade is a deliberate commit).
lock:
	@rm -rf .lock-venv && $(PY) -m venv .lock-venv
	@.lock-venv/bin/python -m pip install --quiet --upgrade pip
	@.lock-venv/bin/python -m pip install --quiet '.[dev]'
	@{ sed -n '1,3p' requirements.lock; .lock-venv/bin/python -m pip freeze --exclude-editable \
		| grep -v '^ot-pipeline'; } > requirements.lock.new && mv requirements.lock.new requirements.lock
	@rm -rf .lock-venv build *.egg-info
	@echo "requirements.lock: $$(grep -vc '^#' requirements.lock) packages"

# The supervisor starts the stack itself, so Ctrl-C stops what it started (not what `make up` did).
run: setup
	@$(BIN)/python -m streaming.run $(RUN_ARGS)

# The same in the background: output in .stack/logs/run.log, stopped by `make stop`.
start: setup
	@$(BIN)/python -m streaming.run --detach $(RUN_ARGS)

stop: setup
	@$(BIN)/python -m streaming.run --stop

logs: setup
	@$(BIN)/python -m streaming.run --logs

# The full `ot drill` tests (marked `drill`, minutes each on a three-broker stack of their own) run
# with `make test-drills`; `make test` keeps the two quick drills (hostile input, consumer loss).
test: setup
	@$(BIN)/python -m pytest -q -m "not drill" $(PYTEST_ARGS)

test-drills: setup
	@$(BIN)/python -m pytest -q -m drill $(PYTEST_ARGS)

# Pure-logic tests only: no servers.
test-fast: setup
	@$(BIN)/python -m pytest -q -m "not stack" $(PYTEST_ARGS)

lint: setup
	@$(BIN)/ruff check streaming ot_pipeline ot_tools ot_pipeline_tests
	@$(BIN)/ruff format --check streaming ot_pipeline ot_tools ot_pipeline_tests
	@$(BIN)/mypy

format: setup
	@$(BIN)/ruff format streaming ot_pipeline ot_tools ot_pipeline_tests
	@$(BIN)/ruff check --fix streaming ot_pipeline ot_tools ot_pipeline_tests

bench: setup
	@$(BIN)/ot stack up
	@$(BIN)/ot bench

# Every fault drill in turn, on a stack of their own (.drill-stack/, ports from 29092): one JSON
# verdict line each, exit 1 if anything was lost or duplicated (docs/reliability.md).
drills: setup
	@$(BIN)/ot drill all

up: setup
	@$(BIN)/ot stack up

up3: setup
	@$(BIN)/ot stack up --brokers 3

down: setup
	@$(BIN)/ot stack down

status: setup
	@$(BIN)/ot stack status

clean:
	@-$(BIN)/python -m streaming.run --stop 2>/dev/null
	@-$(BIN)/ot stack down 2>/dev/null
	rm -rf $(VENV) .stack lake .dagster .pytest_cache .mypy_cache .ruff_cache dashboard/node_modules dashboard/dist
