# Quickstart targets. Both create .venv on first use and install what they need into it, at the
# versions pinned in constraints.txt (the ones the committed results were made with).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-test
NATIVE := seqjax/kernels/native/librnn_cpu.so

.PHONY: run test install bench clean FORCE

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed: $(VENV)/bin/python setup.cfg pyproject.toml constraints.txt
	$(PY) -m pip install -q -c constraints.txt -e .
	touch $@

# The native CPU kernels of the fused LSTM (seqjax/kernels/native/), built for this machine's
# CPU against the installed jaxlib's FFI headers with the system's C++ compiler ($$CXX, default
# g++). They are optional: without them, or on a CPU they were not built for, seqjax runs the
# XLA loops instead and says so. Always asked (FORCE), so a checkout shared by machines with
# different CPUs rebuilds where the library on disk was built for another CPU.
$(NATIVE): seqjax/kernels/native/rnn_cpu.cc seqjax/kernels/native/blocks.h $(VENV)/.installed FORCE
	$(PY) -m seqjax.kernels.native --if-needed || echo "seqjax: native CPU kernels not built (above); the XLA loops run instead"

# The test extras in the same single install (one resolve, one editable build), which also
# counts as the plain install above.
$(STAMP): $(VENV)/bin/python setup.cfg pyproject.toml constraints.txt
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $(VENV)/.installed $@

install: $(VENV)/.installed $(NATIVE)

# The main job: GRU vs LSTM counting (Weiss et al. 2018), default config. The native kernels
# are optional, so it does not build them.
run: $(VENV)/.installed
	$(PY) -m experiments.counting --workdir runs/counting-$$(date +%Y%m%d-%H%M%S)

test: $(STAMP) $(NATIVE)
	$(PY) -m pytest -q -n 2 tests

bench: $(VENV)/.installed $(NATIVE)
	$(PY) -m experiments.benchmark

FORCE:

clean:
	rm -rf $(VENV) runs $(NATIVE) seqjax/kernels/native/librnn_cpu.cpu.json
