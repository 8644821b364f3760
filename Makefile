# csext everyday tasks. On a fresh clone `make run` or `make test` sets everything up:
# the virtualenv (.venv), the editable install and a local RabbitMQ (scripts/ensure-*.sh).
# `make help` lists the targets.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Touched after a successful `pip install -e`; reinstalls only when pyproject.toml is newer.
STAMP := $(VENV)/.csext-installed
# mypy cannot follow setuptools' editable import hook, so it reads the code through a
# csext/ tree of symlinks (pyproject.toml maps each part folder into csext.*).
MYPY_PATH := $(VENV)/mypy-path
PACKAGES := schemas handlers worker store bridges cli sdk web
REGISTRY ?= extensions
WEB_PORT ?= 8080
METRICS_PORT ?= 9464
PYTEST_ARGS ?=
COMPOSE ?= docker compose

.PHONY: help install rabbitmq test-tools run test lint format mypy all bench bench-smoke faults plugin up down \
	cluster cluster-stop \
	logs clean distclean

help: ## List the targets
	@echo "Usage: make <target>   (first run creates .venv and starts a local RabbitMQ)"
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) \
		| awk 'BEGIN {FS = ":.*## "} {printf "  %-12s %s\n", $$1, $$2}'

$(BIN)/pip:
	@PYTHON=$(PYTHON) bash scripts/ensure-venv.sh $(VENV)

$(STAMP): pyproject.toml | $(BIN)/pip
	$(BIN)/python -m pip install --no-input -e '.[test,dev]'
	@touch $@

install: $(STAMP) ## Create .venv and install csext editable with test and dev extras

rabbitmq: ## Make sure RabbitMQ answers on 127.0.0.1:5672 (installs and starts it if needed)
	@bash scripts/ensure-rabbitmq.sh </dev/null

test-tools: ## Install what the suite drives besides Python (Groovy, JDK + jars, Chromium)
	@bash scripts/ensure-test-tools.sh </dev/null

run: install rabbitmq ## Run a worker on ./extensions and the web UI (csext serve) in the foreground (Ctrl-C stops both)
	@bash scripts/how-to-try.sh $(REGISTRY) $(BIN) $(WEB_PORT) $(METRICS_PORT)
	@# The web UI (http://127.0.0.1:$(WEB_PORT)/) runs beside the worker and stops with it.
	$(BIN)/csext serve --registry $(REGISTRY) --port $(WEB_PORT) --log-level warning & \
		trap 'kill $$! 2>/dev/null' EXIT; \
		CSEXT_METRICS_PORT=$(METRICS_PORT) $(BIN)/csext worker --registry $(REGISTRY)

test: install rabbitmq test-tools ## Run the test suite (extra pytest arguments: PYTEST_ARGS="-k name -x")
	$(BIN)/pytest $(PYTEST_ARGS)

lint: install ## Lint with ruff
	$(BIN)/ruff check .

format: install ## Format with ruff
	$(BIN)/ruff format .

$(MYPY_PATH)/csext: | $(BIN)/pip
	@mkdir -p $@
	@for pkg in $(PACKAGES); do ln -sfn "../../../$$pkg" "$@/$$pkg"; done

mypy: install $(MYPY_PATH)/csext ## Type-check with mypy (strict)
	MYPYPATH=$(MYPY_PATH) $(BIN)/mypy $(addprefix -p csext.,$(PACKAGES))

all: lint mypy test ## lint, mypy and test

bench: install rabbitmq ## Run the benchmarks and write BENCHMARKS.md (installs the peers: the bench extra)
	$(BIN)/python -m pip install --no-input -q -e '.[bench]'
	@# As root: on a second node (scripts/bench-broker.sh: port 5673, 20000 open files).
	if [ "$$(id -u)" = 0 ] && scripts/bench-broker.sh start; then \
		$(BIN)/python -m bench --amqp-url amqp://guest:guest@127.0.0.1:5673/; \
	else \
		$(BIN)/python -m bench; \
	fi

bench-smoke: install rabbitmq ## A quick benchmark run that only checks the numbers come out
	$(BIN)/python -m bench --smoke

plugin: ## Build the CloudStack plugin jar (bridges/cloudstack-plugin/build/csext-cloudstack-plugin-<version>.jar)
	bash bridges/cloudstack-plugin/build.sh

faults: install rabbitmq ## Run the full fault-injection suite (tests/faults, tests/cluster)
	CSEXT_FAULTS_FULL=1 $(BIN)/pytest tests/faults tests/cluster $(PYTEST_ARGS)

cluster: ## Start a local 3-node RabbitMQ cluster on ports 5681-5683 (scripts/cluster.sh; stop: make cluster-stop)
	@bash scripts/cluster.sh start </dev/null

cluster-stop: ## Stop the local 3-node RabbitMQ cluster
	@bash scripts/cluster.sh stop </dev/null

up: ## Start RabbitMQ and a worker in Docker (docker compose up -d --build)
	$(COMPOSE) up -d --build

down: ## Stop the Docker services (docker compose down)
	$(COMPOSE) down

logs: ## Follow the Docker worker's logs
	$(COMPOSE) logs -f worker

clean: ## Remove caches and build output (keeps .venv)
	rm -rf build dist ./*.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean ## clean, and remove .venv too
	rm -rf $(VENV)
