# Quickstart targets. Both create .venv on first use and install what they need into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-test

.PHONY: run test install bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed: $(VENV)/bin/python setup.cfg pyproject.toml
	$(PY) -m pip install -q -e .
	touch $@

$(STAMP): $(VENV)/.installed
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

# The main job: GRU vs LSTM counting (Weiss et al. 2018), default config.
run: $(VENV)/.installed
	$(PY) -m experiments.counting --workdir runs/counting-$$(date +%Y%m%d-%H%M%S)

test: $(STAMP)
	$(PY) -m pytest -q -n 2 tests

bench: $(VENV)/.installed
	$(PY) -m experiments.benchmark

clean:
	rm -rf $(VENV) runs
