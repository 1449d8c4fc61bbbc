"""RTL performance: cycles, utilization and energy of GEMMs on Verilator, and simulator speed.

For a 16x16 weight-stationary array it runs three GEMMs on the Verilator backend and checks every
counter against the golden cycle model, then measures the Amaranth simulator (pysim) on a short GEMM
of the same configuration to compare simulation speed. A 4x4 array runs one more GEMM. Prints a
table (or one JSON object with ``--json``) and writes a PNG plot.

    python benchmarks/bench_perf.py [--json] [--plot benchmarks/bench_perf.png] [--no-pysim]

Targets: utilization >= 95 % (256x256x256), >= 80 % (64x64x64), >= 90 % (M=128, N=512, K=64);
Verilator >= 200,000 simulated cycles/s and >= 1000x pysim.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from opennpu.compiler.gemm import build_gemm, random_gemm
from opennpu.config import NpuConfig
from opennpu.golden.model import GoldenNpu
from opennpu.sim.pysim import run_pysim
from opennpu.sim.verilator import build_harness, run_verilator

__all__ = ["CONFIG_16X16", "CONFIG_4X4", "GEMMS", "measure_gemm", "measure_pysim", "main"]

#: SRAMs deep enough that every benchmark GEMM keeps all its weights resident and tiles M in few chunks.
CONFIG_16X16 = NpuConfig(rows=16, cols=16, act_depth=8192, wgt_depth=4096, acc_depth=1024)
CONFIG_4X4 = NpuConfig(rows=4, cols=4, act_depth=8192, wgt_depth=1024, acc_depth=1024)
#: (M, N, K, utilization target): A is M x K, W is K x N.
GEMMS = [(256, 256, 256, 0.95), (64, 64, 64, 0.80), (128, 512, 64, 0.90)]
SPEED_TARGET, RATIO_TARGET = 200_000, 1000
REPEATS = 3          # Verilator runs per GEMM; the fastest gives the simulation speed


def measure_gemm(config: NpuConfig, m: int, n: int, k: int) -> dict:
    """Run one random GEMM on Verilator (best of ``REPEATS``) and on the golden model."""
    gp = build_gemm(config, random_gemm(m, k, n, seed=1))
    golden = GoldenNpu(config).run(gp.program)
    walls, result = [], None
    for _ in range(REPEATS):
        start = time.perf_counter()
        result = run_verilator(config, gp.program)
        walls.append(time.perf_counter() - start)
    c, pes = result.counters, config.rows * config.cols
    wall = min(walls)
    return {
        "array": config.array, "m": m, "n": n, "k": k, "cycles": c["cycles"],
        "golden_cycles": golden.counters["cycles"], "busy_cycles": c["busy_cycles"], "macs": c["macs"],
        "utilization": c["macs"] / (c["cycles"] * pes), "busy_fraction": c["busy_cycles"] / c["cycles"],
        "energy_pj": c["energy_fj"] / 1000, "wall_s": wall, "cycles_per_s": c["cycles"] / wall,
        "counters_match_golden": result.counters == golden.counters,
        "outputs_match_golden": result.outputs == golden.outputs,
        "numerics_ok": bool(np.array_equal(gp.decode_output(result.outputs), gp.spec.expected())),
    }


def measure_pysim(config: NpuConfig) -> dict:
    """pysim speed on two short GEMMs: the difference of their cycles over the difference of their wall
    times, so elaboration and simulator start-up (paid once per run) cancel out."""
    runs = []
    for m in (16, 48):
        gp = build_gemm(config, random_gemm(m, 16, 16, seed=2))
        start = time.perf_counter()
        result = run_pysim(config, gp.program)
        runs.append((result.counters["cycles"], time.perf_counter() - start,
                     result.counters == GoldenNpu(config).run(gp.program).counters))
    (c0, w0, ok0), (c1, w1, ok1) = runs
    return {"program": "GEMM M in (16, 48), N=K=16", "cycles": [c0, c1], "wall_s": [w0, w1],
            "cycles_per_s": (c1 - c0) / (w1 - w0), "cycles_per_s_whole_run": c1 / w1,
            "counters_match_golden": ok0 and ok1}


def _plot(path: str, rows: list[dict], pysim: dict | None):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (util_ax, speed_ax) = plt.subplots(1, 2, figsize=(11, 4))
    labels = [f"{r['array']}\nM{r['m']} N{r['n']} K{r['k']}" for r in rows]
    x = np.arange(len(rows))
    util_ax.bar(x - 0.2, [100 * r["utilization"] for r in rows], 0.4, label="MAC utilization")
    util_ax.bar(x + 0.2, [100 * r["busy_fraction"] for r in rows], 0.4, label="busy / cycles")
    for i, r in enumerate(rows):
        if r.get("target") is not None:
            util_ax.hlines(100 * r["target"], i - 0.45, i + 0.45, colors="k", linestyles="dashed")
    util_ax.set_xticks(x, labels, fontsize=8)
    util_ax.set_ylabel("%")
    util_ax.set_ylim(0, 105)
    util_ax.set_title("Array utilization (dashed: target)")
    util_ax.legend(loc="lower left", fontsize=8)

    names = [f"Verilator\n{r['array']} M{r['m']}" for r in rows]
    speeds = [r["cycles_per_s"] for r in rows]
    if pysim:
        names.append(f"pysim\n{CONFIG_16X16.array}")
        speeds.append(pysim["cycles_per_s"])
    speed_ax.bar(range(len(speeds)), speeds, color=["C2"] * len(rows) + ["C3"] * bool(pysim))
    speed_ax.axhline(SPEED_TARGET, color="k", linestyle="dashed")
    speed_ax.set_yscale("log")
    speed_ax.set_xticks(range(len(speeds)), names, fontsize=8)
    speed_ax.set_ylabel("simulated cycles / s")
    speed_ax.set_title("Simulation speed (dashed: Verilator target)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--plot", default=str(Path(__file__).with_name("bench_perf.png")), help="PNG path")
    parser.add_argument("--no-pysim", action="store_true", help="skip the (slow) Amaranth simulator run")
    args = parser.parse_args(argv)

    builds = {}
    for config in (CONFIG_16X16, CONFIG_4X4):
        start = time.perf_counter()
        build_harness(config)
        builds[config.array] = time.perf_counter() - start
    rows = [dict(measure_gemm(CONFIG_16X16, m, n, k), target=target) for m, n, k, target in GEMMS]
    rows.append(dict(measure_gemm(CONFIG_4X4, 256, 64, 64), target=None))
    pysim = None if args.no_pysim else measure_pysim(CONFIG_16X16)
    ratio = pysim and rows[0]["cycles_per_s"] / pysim["cycles_per_s"]
    _plot(args.plot, rows, pysim)

    report = {"config_16x16": CONFIG_16X16.to_dict(), "config_4x4": CONFIG_4X4.to_dict(),
              "bus_bytes": {"16x16": CONFIG_16X16.bus_bytes, "4x4": CONFIG_4X4.bus_bytes},
              "build_s": builds, "gemms": rows, "pysim": pysim, "verilator_over_pysim": ratio, "plot": args.plot}
    if args.json:
        print(json.dumps(report))
        return
    c = CONFIG_16X16
    print(f"config: {c.array} {c.dataflow.upper()}, act/wgt/acc SRAM {c.act_depth}/{c.wgt_depth}/{c.acc_depth} "
          f"words, data bus {c.bus_bytes} B/cycle, energy table {c.energy.name}")
    print(f"        {CONFIG_4X4.array}: act/wgt/acc {CONFIG_4X4.act_depth}/{CONFIG_4X4.wgt_depth}/"
          f"{CONFIG_4X4.acc_depth} words, data bus {CONFIG_4X4.bus_bytes} B/cycle")
    print("build (0 s = cached): " + ", ".join(f"{a} {s:.1f} s" for a, s in builds.items()))
    print(f"{'array':>6} {'M':>4} {'N':>4} {'K':>4} {'cycles':>8} {'golden':>8} {'util':>7} {'target':>7} "
          f"{'busy/cyc':>8} {'energy pJ':>12} {'wall s':>7} {'cycles/s':>10}  check")
    for r in rows:
        ok = r["cycles"] == r["golden_cycles"] and r["counters_match_golden"] and r["outputs_match_golden"] \
            and r["numerics_ok"]
        target = f"{r['target']:.0%}" if r["target"] is not None else "-"
        print(f"{r['array']:>6} {r['m']:>4} {r['n']:>4} {r['k']:>4} {r['cycles']:>8} {r['golden_cycles']:>8} "
              f"{r['utilization']:>7.1%} {target:>7} {r['busy_fraction']:>8.1%} {r['energy_pj']:>12.1f} "
              f"{r['wall_s']:>7.3f} {r['cycles_per_s']:>10.0f}  {'ok' if ok else 'MISMATCH'}")
    for r in rows:
        if r["target"] is not None and r["utilization"] < r["target"]:
            print(f"  MISS: M{r['m']} N{r['n']} K{r['k']} utilization {r['utilization']:.1%} is "
                  f"{100 * (r['target'] - r['utilization']):.1f} points under {r['target']:.0%}")
    speed = rows[0]["cycles_per_s"]
    print(f"Verilator {speed:,.0f} cycles/s on the 256^3 GEMM (target {SPEED_TARGET:,}): "
          f"{'ok' if speed >= SPEED_TARGET else 'MISS'}")
    if pysim:
        print(f"pysim {pysim['cycles_per_s']:,.0f} cycles/s ({pysim['program']}, marginal; whole run incl. "
              f"elaboration {pysim['cycles_per_s_whole_run']:,.0f}); Verilator / pysim = {ratio:,.0f}x "
              f"(target {RATIO_TARGET}x): {'ok' if ratio >= RATIO_TARGET else 'MISS'}")
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
