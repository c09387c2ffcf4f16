# Two entry points for a fresh machine (see README):
#   make run    install what is needed, then run the pipeline on Fashion-MNIST
#   make test   install what is needed, then run the test suite
# Extra arguments for `granular run`: make run ARGS="--params examples/quick.yaml"

SHELL := bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
# This machine's pip configuration names package folders that may be absent; hide those warnings.
QUIET_PIP := { grep -v "^WARNING: Location" || true; }
VENV := .venv
INSTALLED := $(VENV)/.installed

.PHONY: run test test-fast install dataset browser

run: install dataset
	$(VENV)/bin/granular run $(ARGS)

test: install dataset browser
	$(VENV)/bin/python -m pytest $(ARGS)

# The tests not marked slow (no servers, no whole runs): about 2 minutes on 2 cores. No browser:
# only a slow test renders a page.
test-fast: install dataset
	$(VENV)/bin/python -m pytest -m "not slow" $(ARGS)

install: $(INSTALLED)

# The exact versions in constraints.txt are a set known to work together (see README: GPU).
$(INSTALLED): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip 2>&1 | $(QUIET_PIP)
	$(VENV)/bin/pip install --quiet -c constraints.txt -e '.[test]' 2>&1 | $(QUIET_PIP)
	$(VENV)/bin/python -c "import granular, prefect, mlflow, dvc, great_expectations, torch"
	touch $@

dataset:
	@bash scripts/ensure-dataset.sh

browser:  # the test suite's UI check renders a page in Debian's chromium
	@bash scripts/ensure-browser.sh
