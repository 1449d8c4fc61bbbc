"""INT8 vs A8W4 vs A4W4 on the same GEMMs: cycles, MACs/cycle, weight traffic, energy.

Runs on the golden model by default (cycle-exact with the RTL: tests/test_rtl.py proves outputs and
every counter equal) or on an RTL backend with ``--backend pysim|verilator``.

    python benchmarks/bench_precision.py [--array 16x16] [--backend golden] [--json]
"""
from __future__ import annotations

import argparse
import json

from opennpu.compiler.gemm import build_gemm, random_gemm
from opennpu.config import PRECISIONS, NpuConfig, parse_array
from opennpu.sim.driver import Npu

SHAPES = [(256, 256, 256), (64, 64, 64), (128, 64, 512)]     # (M, K, N)


def measure(config: NpuConfig, m: int, k: int, n: int, precision: str, backend: str) -> dict:
    gp = build_gemm(config, random_gemm(m, k, n, precision, seed=1))
    c = Npu(config, backend).run(gp.program).counters
    weight_bytes = c["wgt_writes"] * config.wgt_word_bytes
    return {"shape": [m, k, n], "precision": precision, "cycles": c["cycles"],
            "macs_per_cycle": c["macs"] / c["cycles"], "macs_per_busy_cycle": c["macs"] / c["busy_cycles"],
            "busy_fraction": c["busy_cycles"] / c["cycles"],
            "weight_bytes": weight_bytes, "wgt_sram_reads": c["wgt_reads"], "dma_in_bytes": c["dma_in_bytes"],
            "energy_pj": c["energy_fj"] / 1000}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--array", default="16x16")
    parser.add_argument("--backend", default="golden", choices=("golden", "pysim", "verilator"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows, cols = parse_array(args.array)
    config = NpuConfig(rows=rows, cols=cols, precisions=PRECISIONS, act_depth=8192, wgt_depth=4096,
                       acc_depth=1024)
    results = [measure(config, m, k, n, p, args.backend) for m, k, n in SHAPES for p in PRECISIONS]
    if args.json:
        print(json.dumps({"array": config.array, "backend": args.backend, "results": results}))
        return
    print(f"{config.array} weight-stationary, bus {config.bus_bytes} B/cycle, backend {args.backend}")
    print(f"{'M,K,N':>13} {'precision':>9} {'cycles':>8} {'MACs/cyc':>9} {'vs int8':>8} {'weight B':>9} "
          f"{'vs int8':>8} {'energy uJ':>10} {'vs int8':>8} {'MACs/busy':>9}")
    for i, r in enumerate(results):
        base = results[i - i % len(PRECISIONS)]
        print(f"{','.join(map(str, r['shape'])):>13} {r['precision']:>9} {r['cycles']:>8} "
              f"{r['macs_per_cycle']:>9.1f} {r['macs_per_cycle'] / base['macs_per_cycle']:>7.2f}x "
              f"{r['weight_bytes']:>9} {r['weight_bytes'] / base['weight_bytes']:>7.2f}x "
              f"{r['energy_pj'] / 1e6:>10.3f} {r['energy_pj'] / base['energy_pj']:>7.2f}x "
              f"{r['macs_per_busy_cycle']:>9.1f}")


if __name__ == "__main__":
    main()
