"""Golden-model speed: wall time of ``opennpu gemm --backend golden`` on the default 16x16 configuration.

Each size N runs an N x N x N int8 GEMM twice:

- through the CLI (``opennpu gemm --array 16x16 --m N --k N --n N --json`` in a fresh process, wall time
  measured around the process: Python start-up, imports, operands, compile, golden run, both checks);
- through the API (``build_gemm`` then ``GoldenNpu.run``, in this process: compile and run, reported
  separately and together).

The last columns divide the API time by M·K·N (ns per MAC) to show that the cost grows linearly with the
work. Targets (issue 19): 64^3 CLI <= 1 s, 1024^3 CLI <= 10 s, 2048^3 CLI <= 60 s.

    python benchmarks/bench_golden.py [--sizes 64 512 1024 2048] [--json]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from opennpu.compiler.gemm import build_gemm, random_gemm
from opennpu.config import NpuConfig
from opennpu.golden.model import GoldenNpu

__all__ = ["CONFIG", "SIZES", "TARGETS", "measure_cli", "measure_api", "main"]

CONFIG = NpuConfig(rows=16, cols=16)          # what ``opennpu gemm --array 16x16`` runs on
SIZES = (64, 512, 1024, 2048)
TARGETS = {64: 1.0, 1024: 10.0, 2048: 60.0}   # CLI wall seconds


def measure_cli(size: int) -> dict:
    argv = [sys.executable, "-m", "opennpu.cli", "gemm", "--array", CONFIG.array, "--m", str(size), "--k", str(size),
            "--n", str(size), "--backend", "golden", "--json"]
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    report = json.loads(done.stdout)
    return {"wall_s": wall, "verified": report["verified"], "cycles": report["cycles"],
            "utilization": report["utilization"], "compile_s": report["compile_s"], "run_s": report["wall_s"]}


def measure_api(size: int) -> dict:
    spec = random_gemm(size, size, size, seed=0)
    start = time.perf_counter()
    gp = build_gemm(CONFIG, spec)
    compiled = time.perf_counter()
    result = GoldenNpu(CONFIG).run(gp.program)
    done = time.perf_counter()
    return {"compile_s": compiled - start, "run_s": done - compiled, "total_s": done - start,
            "commands": len(gp.program.commands), "cycles": result.counters["cycles"],
            "utilization": result.counters["macs"] / (result.counters["cycles"] * CONFIG.rows * CONFIG.cols)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="GEMM sides (default %(default)s)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    rows = []
    for size in args.sizes:
        cli, api = measure_cli(size), measure_api(size)
        macs = size ** 3
        rows.append({"size": size, "cli": cli, "api": api, "api_ns_per_mac": 1e9 * api["total_s"] / macs,
                     "cli_ns_per_mac": 1e9 * cli["wall_s"] / macs, "target_s": TARGETS.get(size)})
    if args.json:
        print(json.dumps({"config": CONFIG.to_dict(), "rows": rows}))
        return
    c = CONFIG
    print(f"golden model speed, {c.array} {c.dataflow.upper()}, act/wgt/acc SRAM {c.act_depth}/{c.wgt_depth}/"
          f"{c.acc_depth} words, int8 N^3 GEMM")
    print(f"{'N':>5} {'commands':>9} {'cycles':>11} {'util':>6} {'CLI s':>7} {'target':>7} {'API s':>7} "
          f"{'compile':>8} {'run':>7} {'API ns/MAC':>10} {'CLI ns/MAC':>10}  check")
    for r in rows:
        cli, api = r["cli"], r["api"]
        target = f"<= {r['target_s']:g}" if r["target_s"] else "-"
        ok = cli["verified"] and cli["cycles"] == api["cycles"] and (r["target_s"] is None or cli["wall_s"] <= r["target_s"])
        print(f"{r['size']:>5} {api['commands']:>9} {api['cycles']:>11} {api['utilization']:>6.1%} {cli['wall_s']:>7.2f} "
              f"{target:>7} {api['total_s']:>7.2f} {api['compile_s']:>8.2f} {api['run_s']:>7.2f} "
              f"{r['api_ns_per_mac']:>10.2f} {r['cli_ns_per_mac']:>10.2f}  {'ok' if ok else 'MISS'}")


if __name__ == "__main__":
    main()
