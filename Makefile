# Tether: two commands on a fresh clone.
#   make demo   run the management plane on embedded defaults (SQLite, demo sites)
#   make test   every check and test (installs what the tests need when run as root)

PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test lint clean

demo: $(VENV)/.installed
	$(BIN)/tether demo

test: $(VENV)/.installed-dev
	scripts/run-tests.sh

lint: $(VENV)/.installed-dev
	scripts/run-tests.sh --lint-only

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
