"""Dataflow x precision on the same GEMMs: WS vs OS, INT8 vs A8W4 vs A4W4.

For each GEMM it prints cycles, MAC utilization, MACs/cycle, weight bytes loaded, weight and accumulator
SRAM accesses and energy, for the weight-stationary (``ws``) and the output-stationary (``os``) NPU in
every precision, with ratios against INT8 of the same dataflow and against WS of the same precision.
Runs on the golden model by default (cycle-exact with the RTL: tests/test_rtl.py and
tests/test_verilator.py prove outputs and every counter equal, for every precision x dataflow) or on
an RTL backend with ``--backend pysim|verilator``.

    python benchmarks/bench_precision.py [--array 16x16] [--backend golden] [--json]

Targets (issue 7): A4W4 at 2.0x the MACs/cycle of INT8 (per busy cycle; whole-program figures include
DMA and drain), A8W4 at half the weight bytes and weight SRAM reads of INT8.
"""
from __future__ import annotations

import argparse
import json

from opennpu.compiler.gemm import build_gemm, random_gemm
from opennpu.config import DATAFLOWS, PRECISIONS, NpuConfig, parse_array
from opennpu.sim.driver import Npu

SHAPES = [(256, 256, 256), (64, 64, 64), (128, 64, 512)]     # (M, K, N)


def measure(config: NpuConfig, m: int, k: int, n: int, precision: str, backend: str) -> dict:
    gp = build_gemm(config, random_gemm(m, k, n, precision, seed=1))
    c = Npu(config, backend).run(gp.program).counters
    return {"shape": [m, k, n], "dataflow": config.dataflow, "precision": precision, "cycles": c["cycles"],
            # of the peak: one MAC per PE per cycle, two in a4w4 (packed int4 pairs)
            "utilization": c["macs"] / (c["cycles"] * config.rows * config.cols * (2 if precision == "a4w4" else 1)),
            "macs_per_cycle": c["macs"] / c["cycles"], "macs_per_busy_cycle": c["macs"] / c["busy_cycles"],
            "busy_fraction": c["busy_cycles"] / c["cycles"],
            "weight_bytes": c["wgt_writes"] * config.wgt_word_bytes, "wgt_sram_reads": c["wgt_reads"],
            "acc_sram_accesses": c["acc_reads"] + c["acc_writes"], "dma_in_bytes": c["dma_in_bytes"],
            "energy_pj": c["energy_fj"] / 1000}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--array", default="16x16")
    parser.add_argument("--backend", default="golden", choices=("golden", "pysim", "verilator"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows, cols = parse_array(args.array)
    results = []
    for m, k, n in SHAPES:
        for dataflow in DATAFLOWS:
            config = NpuConfig(rows=rows, cols=cols, dataflow=dataflow, precisions=PRECISIONS, act_depth=8192,
                               wgt_depth=4096, acc_depth=1024)
            results += [measure(config, m, k, n, p, args.backend) for p in PRECISIONS]
    if args.json:
        print(json.dumps({"array": f"{rows}x{cols}", "backend": args.backend, "results": results}))
        return
    print(f"{rows}x{cols} NPU, bus {config.bus_bytes} B/cycle, backend {args.backend}; "
          f"'/int8': vs INT8 of the same dataflow, '/ws': vs WS of the same precision; util: MACs / peak MACs")
    print(f"{'M,K,N':>12} {'df':>3} {'prec':>5} {'cycles':>7} {'util':>6} {'MAC/cyc':>7} {'/int8':>6} "
          f"{'MAC/busy':>8} {'wgt B':>7} {'/int8':>6} {'wgt rd':>7} {'acc rd+wr':>9} {'energy uJ':>9} "
          f"{'/int8':>6} {'/ws':>6}")
    key = {(tuple(r["shape"]), r["dataflow"], r["precision"]): r for r in results}
    for r in results:
        base = key[tuple(r["shape"]), r["dataflow"], "int8"]
        ws = key[tuple(r["shape"]), "ws", r["precision"]]
        print(f"{','.join(map(str, r['shape'])):>12} {r['dataflow']:>3} {r['precision']:>5} {r['cycles']:>7} "
              f"{100 * r['utilization']:>5.1f}% {r['macs_per_cycle']:>7.1f} "
              f"{r['macs_per_cycle'] / base['macs_per_cycle']:>5.2f}x {r['macs_per_busy_cycle']:>8.1f} "
              f"{r['weight_bytes']:>7} {r['weight_bytes'] / base['weight_bytes']:>5.2f}x {r['wgt_sram_reads']:>7} "
              f"{r['acc_sram_accesses']:>9} {r['energy_pj'] / 1e6:>9.3f} {r['energy_pj'] / base['energy_pj']:>5.2f}x "
              f"{r['energy_pj'] / ws['energy_pj']:>5.2f}x")


if __name__ == "__main__":
    main()
