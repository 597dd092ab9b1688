# `make test` works on a fresh Debian 12 / Python 3.11 machine from a clean clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: test venv system-deps clean-venv

test: $(STAMP)
	$(PY) -m pytest -q

venv: $(STAMP)

system-deps:
	@if ! ldconfig -p | grep -q libportaudio.so.2; then \
		(apt-get update && apt-get install -y --no-install-recommends libportaudio2) \
		|| echo "warning: could not install libportaudio2 (microphone I/O will be unavailable)"; \
	fi

# torch is pinned first so the CPU build is taken (an unpinned torch pulls GBs of CUDA wheels).
# llama-cpp-python is built portable (-DGGML_NATIVE=OFF): the native build crashes (SIGILL, AMX)
# on quantised models on these CPUs.
$(STAMP): pyproject.toml Makefile
	$(MAKE) system-deps
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel setuptools
	$(PIP) install -q torch==2.13.0
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(PIP) install -q "llama-cpp-python>=0.3"
	$(PIP) install -q -e ".[cpu,train,kernels,test]"
	touch $(STAMP)

clean-venv:
	rm -rf $(VENV)
