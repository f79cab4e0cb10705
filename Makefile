# canaryctl: `make test` and `make demo` set everything up on a fresh Debian machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint check crds deps venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# System packages the suite uses (Prometheus, hey); skipped when already present.
deps:
	bash scripts/install-system-deps.sh

lint: venv
	$(BIN)/ruff check canaryctl tests e2e bench
	$(BIN)/ruff format --check canaryctl tests e2e bench
	$(BIN)/mypy canaryctl
	$(BIN)/lint-imports

check: lint

test: venv deps lint
	$(BIN)/pytest -q

crds: venv
	$(BIN)/python -m canaryctl.api.crd crds

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
