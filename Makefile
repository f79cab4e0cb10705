# canaryctl: `make test` and `make demo` set everything up on a fresh Debian machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo lint crds deps tools venv clean reliability kind

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,otlp]'
	touch $(STAMP)

# Debian packages the suite and the demo run for real: Prometheus and hey.
deps:
	bash scripts/install-system-deps.sh

# Real helm and kubectl binaries for the chart tests, unpacked into .tools/bin.
tools: venv
	bash scripts/install-test-tools.sh $(BIN)/python

lint: venv
	$(BIN)/ruff check canaryctl tests e2e bench
	$(BIN)/ruff format --check canaryctl tests e2e bench
	$(BIN)/mypy canaryctl tests e2e bench
	$(BIN)/lint-imports

test: venv deps tools lint
	$(BIN)/pytest -q

# A whole canary on this machine with real traffic: a healthy v2 is promoted, a faulty one rolled back.
demo: venv deps
	$(BIN)/canaryctl demo --scenario healthy --scenario faulty --report-dir demo-reports

# The failure tests alone (they also run in `make test`).
reliability: venv deps tools
	$(BIN)/pytest -q tests/reliability

# The kind suite: needs Docker; skips with one reason line without it.
kind: venv tools
	$(BIN)/pytest -m kind e2e/kind -rs

crds: venv
	$(BIN)/python -m canaryctl.api.crd crds
	bash scripts/sync-chart-crds.sh

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache demo-reports
