# Tether: two commands on a fresh clone.
#   make demo   run the management plane on embedded defaults (SQLite, demo sites)
#   make test   every check and test (installs what the tests need when run as root)
#   make floors the tests against the lowest dependency versions pyproject.toml declares

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test lint floors clean

demo: $(VENV)/.installed
	$(BIN)/tether demo

test: $(VENV)/.installed-dev
	scripts/run-tests.sh

lint: $(VENV)/.installed-dev
	scripts/run-tests.sh --lint-only

floors: $(VENV)/.installed-dev
	$(BIN)/python scripts/check_floors.py

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(VENV)/.installed

clean:
	rm -rf $(VENV) build src/*.egg-info
