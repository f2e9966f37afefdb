# Quickstart targets. Both create .venv on first use and install what they need into it, at the
# versions pinned in constraints.txt (the ones the committed results were made with).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-test
NATIVE := seqjax/_native/librnn_cpu.so

.PHONY: run test install bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed: $(VENV)/bin/python setup.cfg pyproject.toml constraints.txt
	$(PY) -m pip install -q -c constraints.txt -e .
	touch $@

# The native CPU kernels of the fused LSTM (seqjax/native.py), built against the installed
# jaxlib's FFI headers with the system's C++ compiler ($$CXX, default g++). Without one, seqjax
# runs the XLA loops instead and says so here.
$(NATIVE): seqjax/_native/rnn_cpu.cc seqjax/_native/blocks.h $(VENV)/.installed
	$(PY) -m seqjax._native || echo "seqjax: native CPU kernels not built (above); the XLA loops run instead"

$(STAMP): $(VENV)/.installed
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

install: $(VENV)/.installed $(NATIVE)

# The main job: GRU vs LSTM counting (Weiss et al. 2018), default config.
run: $(VENV)/.installed $(NATIVE)
	$(PY) -m experiments.counting --workdir runs/counting-$$(date +%Y%m%d-%H%M%S)

test: $(STAMP) $(NATIVE)
	$(PY) -m pytest -q -n 2 tests

bench: $(VENV)/.installed $(NATIVE)
	$(PY) -m experiments.benchmark

clean:
	rm -rf $(VENV) runs $(NATIVE)
