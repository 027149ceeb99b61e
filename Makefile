# Stratus — developer entry points. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STRATUS := $(VENV)/bin/stratus
PYTEST_ARGS ?=

.DEFAULT_GOAL := help

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(PY): pyproject.toml requirements.lock
	@echo "make: creating the Python environment in $(VENV)"
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -c requirements.lock -e '.[test,instance]'
	@touch $(PY)

venv: $(PY) ## Create the Python environment (.venv) from the pinned requirements.lock

SPARK_READY := $(VENV)/.spark-ready
$(SPARK_READY): $(PY) hack/spark-jars.sh hack/spark/pom.xml
	$(VENV)/bin/pip install -q -c requirements.lock -e '.[test,instance,spark]'
	@hack/spark-jars.sh $(PY) >/dev/null
	@touch $(SPARK_READY)

spark: deps $(SPARK_READY) ## Install Spark (pyspark extra) and the s3a connector jars (cached by version)

deps: ## Install the Debian packages the tests need (hack/debian-packages.txt)
	@hack/install-deps.sh

tools: ## Build the control plane from Go modules (cached by version; cold about 9 minutes on 2 cores)
	@hack/build-tools.sh

crds: $(PY) ## Regenerate crds/ and the chart's CRDs from the models
	@$(STRATUS) crds
	@$(STRATUS) crds --out charts/stratus/crds

lock: ## Re-pin requirements.lock from the current environment
	$(VENV)/bin/pip freeze --exclude-editable | grep -v '^stratus' > requirements.lock

run: deps venv tools spark ## Bring up the local cloud: control plane, CRDs, operator, examples/
	@$(STRATUS) dev run

down: venv ## Stop the operator and delete the local cluster
	@$(STRATUS) dev down

status: venv ## Say whether the local cluster and operator run
	@$(STRATUS) dev status

test: deps venv tools spark ## Run the whole test suite (unit, then integration on the local control plane)
	@$(PY) -m pytest tests/unit tests/integration $(PYTEST_ARGS)

test-unit: venv ## Run the unit tests only (no cluster)
	@$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-integration: deps venv tools spark ## Run the integration tests only
	@$(PY) -m pytest tests/integration $(PYTEST_ARGS)

bench: deps venv tools ## Run every benchmark with its baseline (about 45 minutes; results in benchmarks/*/results.md)
	$(VENV)/bin/pip install -q -c requirements.lock -e '.[bench]'
	$(PY) benchmarks/ledger/bench.py
	$(PY) benchmarks/metering/bench.py
	$(PY) benchmarks/images/bench.py
	$(PY) benchmarks/identity/bench.py
	$(PY) benchmarks/baremetal/bench.py
	$(PY) benchmarks/compute/bench.py --count 300
	$(PY) benchmarks/orchestration/bench.py --count 100
	$(PY) -m benchmarks.consolidation
	$(PY) benchmarks/databases/bench.py

.PHONY: help venv deps tools crds lock run down status test test-unit test-integration bench spark
