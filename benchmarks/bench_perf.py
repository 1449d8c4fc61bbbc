"""RTL performance: cycles, utilization and energy of GEMMs on Verilator, and simulator speed.

For a 16x16 weight-stationary array it runs three GEMMs on the Verilator backend and checks every
counter against the golden cycle model, then measures the Amaranth simulator (pysim) on a short GEMM
of the same configuration to compare simulation speed. A 4x4 array runs one more GEMM. The shapes of
issue 19 that need another harness (a4w4) or long runs (matrix-vector) run on the golden cycle model
(cycle-exact with the RTL: tests/test_verilator.py, tests/test_rtl.py). Every row is printed next to its
bound (``compiler.gemm.gemm_bound``: max(compute, data in, data out) + one tile's latency). For the
16x16x16 GEMM two lines split its cycles into its one tile's stages, measured on the golden trace, and
those into the bound's pipeline latency, the tile's own work and the dispatch (scheduling) cycles left.
Beside them it prints SCALE-Sim 3.0's compute cycles of the same int8 shapes (``scale_sim_cycles``; the
16x16 rows, and four shapes on the output-stationary array). Prints a table (or one JSON object with
``--json``) and writes a PNG plot.

    python benchmarks/bench_perf.py [--json] [--plot benchmarks/bench_perf.png] [--no-pysim] [--large]

Targets: utilization >= 98 % (256x256x256), >= 88 % (64x64x64), >= 97 % (M=128, N=512, K=64),
>= 85 % (64x64x64 a4w4), >= 95 % (2048^3, ``--large``: about a minute on the golden model), >= 45 %
(8x4096x4096) and every M <= 16 row within 1.15x of its bound;
Verilator >= 200,000 simulated cycles/s and >= 1000x pysim.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from dataclasses import replace

from opennpu.compiler.gemm import build_gemm, gemm_bound, random_gemm
from opennpu.config import NpuConfig
from opennpu.golden.model import GoldenNpu
from opennpu.sim.pysim import run_pysim
from opennpu.sim.verilator import build_harness, run_verilator

__all__ = ["CONFIG_16X16", "CONFIG_4X4", "CONFIG_16X16_OS", "GEMMS", "GOLDEN_GEMMS", "OS_GEMMS", "measure_gemm",
           "measure_golden", "scale_sim_cycles", "serial_path", "latency_split", "measure_pysim", "main"]

#: SRAMs deep enough that every benchmark GEMM keeps all its weights resident and tiles M in few chunks.
CONFIG_16X16 = NpuConfig(rows=16, cols=16, act_depth=8192, wgt_depth=4096, acc_depth=1024)
CONFIG_4X4 = NpuConfig(rows=4, cols=4, act_depth=8192, wgt_depth=1024, acc_depth=1024)
#: The same 16x16 NPU with the int4 precisions, for the golden-model rows.
CONFIG_16X16_INT4 = replace(CONFIG_16X16, precisions=("int8", "a8w4", "a4w4"))
#: (M, N, K, utilization target): A is M x K, W is K x N.
GEMMS = [(256, 256, 256, 0.98), (64, 64, 64, 0.88), (128, 512, 64, 0.97)]
#: Golden-model rows (M, N, K, precision, utilization target); the last one only with ``--large``. The
#: M <= 16 rows (matrix-vector, batch-1 layers) also have issue 19's ratio target, ``SMALL_M_RATIO``.
GOLDEN_GEMMS = [(8, 4096, 4096, "int8", 0.45), (1, 4096, 4096, "int8", None), (16, 1024, 1024, "int8", None),
                (8, 256, 256, "int8", None), (16, 64, 64, "int8", None), (64, 64, 64, "a4w4", 0.85),
                (4, 512, 64, "int8", None), (16, 512, 32, "int8", None), (16, 512, 16, "int8", None),
                (3, 100, 27, "int8", None), (16, 16, 16, "int8", None)]
SMALL_M_RATIO = 1.15
LARGE_GEMM = (2048, 2048, 2048, "int8", 0.95)
#: The same 16x16 NPU output-stationary, for the SCALE-Sim comparison (golden model), and its shapes (M, N, K).
CONFIG_16X16_OS = replace(CONFIG_16X16, dataflow="os")
OS_GEMMS = [(256, 256, 256), (64, 64, 64), (128, 512, 64), (16, 16, 16)]
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
        "array": config.array, "m": m, "n": n, "k": k, "precision": "int8", "backend": "verilator",
        "cycles": c["cycles"], "bound": gemm_bound(config, m, k, n),
        "golden_cycles": golden.counters["cycles"], "busy_cycles": c["busy_cycles"], "macs": c["macs"],
        "utilization": m * k * n / (c["cycles"] * pes), "busy_fraction": c["busy_cycles"] / c["cycles"],
        "transposed": gp.transposed,
        "energy_pj": c["energy_fj"] / 1000, "wall_s": wall, "cycles_per_s": c["cycles"] / wall,
        "counters_match_golden": result.counters == golden.counters,
        "outputs_match_golden": result.outputs == golden.outputs,
        "numerics_ok": bool(np.array_equal(gp.decode_output(result.outputs), gp.spec.expected())),
    }


def measure_golden(config: NpuConfig, m: int, n: int, k: int, precision: str) -> dict:
    """Compile and run one random GEMM on the golden model (cycle-exact with the RTL): the same row as
    ``measure_gemm`` without the Verilator columns; ``wall_s`` is compile plus golden run."""
    start = time.perf_counter()
    gp = build_gemm(config, random_gemm(m, k, n, precision=precision, seed=1))
    npu = GoldenNpu(config)
    result = npu.run(gp.program)
    wall = time.perf_counter() - start
    c, pes = result.counters, config.rows * config.cols
    macs_per_pe = 2 if precision == "a4w4" else 1
    return {
        "array": config.array, "m": m, "n": n, "k": k, "precision": precision, "backend": "golden",
        "cycles": c["cycles"], "bound": gemm_bound(config, m, k, n, precision), "golden_cycles": c["cycles"],
        "busy_cycles": c["busy_cycles"], "macs": c["macs"],
        "utilization": m * k * n / (c["cycles"] * pes * macs_per_pe), "busy_fraction": c["busy_cycles"] / c["cycles"],
        "transposed": gp.transposed,
        "energy_pj": c["energy_fj"] / 1000, "wall_s": wall, "cycles_per_s": c["cycles"] / wall,
        "numerics_ok": bool(np.array_equal(gp.decode_output(result.outputs), gp.spec.expected())),
        "trace": [(cmd.op.name, d, cmd.fields.get("rows")) for cmd, d in npu.trace],
    }


def scale_sim_cycles(config: NpuConfig, m: int, k: int, n: int) -> int:
    """SCALE-Sim 3.0's compute cycles of an int8 ``m x k x n`` GEMM on ``config``'s array (no data transfer,
    no activation): weight-stationary, ``ceil(K/R) * ceil(N/C)`` folds of ``2R + C + M - 2`` cycles each
    (fill R weight rows, then M rows skewed over R + C - 2); output-stationary, ``ceil(M/R) * ceil(N/C)``
    folds of ``K + R + C - 2``. On 16x16: ``M + 46`` and ``K + 30`` per fold (issue 19)."""
    r, c = config.rows, config.cols
    if config.dataflow == "ws":
        return -(-k // r) * -(-n // c) * (2 * r + c + m - 2)
    return -(-m // r) * -(-n // c) * (k + r + c - 2)


def serial_path(row: dict) -> dict:
    """The cycles of a one-tile GEMM split at the dispatch cycles of its golden trace (CONFIG, LOAD W,
    PRELOAD streaming behind it, LOAD A, COMPUTE streaming behind that, LOAD_BIAS, ACTIVATE streaming
    behind the COMPUTE's drain): each stage starts when the one before it allows. ``PRELOAD`` runs to the
    COMPUTE's dispatch, ``first row's drain`` from there to the ACTIVATE's (its first row is written),
    ``rows + activation`` from there to the end (the write-back of the rows, then its pipeline)."""
    ops = [op for op, _, _ in row["trace"]]
    expected = ["CONFIG", "LOAD", "PRELOAD", "LOAD", "COMPUTE", "LOAD_BIAS", "ACTIVATE"]
    if ops != expected:
        raise ValueError(f"not a one-tile program: {ops}")
    d = [cycle for _, cycle, _ in row["trace"]]
    return {"CONFIG": d[1] - d[0], "weight LOAD dispatch": d[2] - d[1], "PRELOAD": d[4] - d[2],
            "first row's drain": d[6] - d[4], "rows + activation": row["cycles"] - d[6]}


def latency_split(row: dict, path: dict) -> dict:
    """A one-tile GEMM's stages (``serial_path``) split into the bound's pipeline latency (``gemm_bound``:
    fill, drain, activation), the tile's own work (its rows, through the array and the write-back) and
    the cycles beyond both, each named: dispatch, i.e. scheduling."""
    bound, rows = row["bound"], row["trace"][-1][2]
    beyond = {"CONFIG": path["CONFIG"], "weight LOAD dispatch": path["weight LOAD dispatch"],
              "PRELOAD beyond fill": path["PRELOAD"] - bound["fill"],
              "drain beyond the drain time": path["first row's drain"] - bound["drain"],
              "write-back beyond its rows and latency": path["rows + activation"] - rows - bound["activation"]}
    return {"latency": {name: bound[name] for name in ("fill", "drain", "activation")}, "work": {"rows": rows},
            "scheduling": beyond}


def measure_pysim(config: NpuConfig) -> dict:
    """pysim speed on two short GEMMs: the difference of their cycles over the difference of their wall
    times, so elaboration and simulator start-up (paid once per run) cancel out."""
    runs = []
    for m in (16, 144):
        gp = build_gemm(config, random_gemm(m, 16, 16, seed=2))
        start = time.perf_counter()
        result = run_pysim(config, gp.program)
        runs.append((result.counters["cycles"], time.perf_counter() - start,
                     result.counters == GoldenNpu(config).run(gp.program).counters))
    (c0, w0, ok0), (c1, w1, ok1) = runs
    return {"program": "GEMM M in (16, 144), N=K=16", "cycles": [c0, c1], "wall_s": [w0, w1],
            "cycles_per_s": (c1 - c0) / (w1 - w0), "cycles_per_s_whole_run": c1 / w1,
            "counters_match_golden": ok0 and ok1}


def _plot(path: str, rows: list[dict], pysim: dict | None):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (util_ax, speed_ax) = plt.subplots(1, 2, figsize=(14, 4.5), width_ratios=(3, 2))
    labels = [f"{r['array']}\nM{r['m']} N{r['n']}\nK{r['k']} {r['precision']}" for r in rows]
    x = np.arange(len(rows))
    util_ax.bar(x - 0.2, [100 * r["utilization"] for r in rows], 0.4, label="MAC utilization")
    util_ax.bar(x + 0.2, [100 * r["busy_fraction"] for r in rows], 0.4, label="busy / cycles")
    for i, r in enumerate(rows):
        if r.get("target") is not None:
            util_ax.hlines(100 * r["target"], i - 0.45, i + 0.45, colors="k", linestyles="dashed")
    util_ax.set_xticks(x, labels, fontsize=7)
    util_ax.set_ylabel("%")
    util_ax.set_ylim(0, 105)
    util_ax.set_title("Array utilization (dashed: target)")
    util_ax.legend(loc="lower left", fontsize=8)

    rtl = [r for r in rows if r["backend"] == "verilator"]
    names = [f"Verilator\n{r['array']} M{r['m']}" for r in rtl]
    speeds = [r["cycles_per_s"] for r in rtl]
    if pysim:
        names.append(f"pysim\n{CONFIG_16X16.array}")
        speeds.append(pysim["cycles_per_s"])
    speed_ax.bar(range(len(speeds)), speeds, color=["C2"] * len(rtl) + ["C3"] * bool(pysim))
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
    parser.add_argument("--large", action="store_true", help="also run 2048^3 on the golden model (~1 min)")
    args = parser.parse_args(argv)

    builds = {}
    for config in (CONFIG_16X16, CONFIG_4X4):
        start = time.perf_counter()
        build_harness(config)
        builds[config.array] = time.perf_counter() - start
    rows = [dict(measure_gemm(CONFIG_16X16, m, n, k), target=target) for m, n, k, target in GEMMS]
    rows.append(dict(measure_gemm(CONFIG_4X4, 256, 64, 64), target=None))
    for m, n, k, precision, target in GOLDEN_GEMMS + [LARGE_GEMM] * args.large:
        rows.append(dict(measure_golden(CONFIG_16X16_INT4, m, n, k, precision), target=target))
    os_rows = [measure_golden(CONFIG_16X16_OS, m, n, k, "int8") for m, n, k in OS_GEMMS]
    configs = {"ws": CONFIG_16X16, "os": CONFIG_16X16_OS}
    scale_sim = [{"dataflow": df, "array": r["array"], "m": r["m"], "n": r["n"], "k": r["k"], "cycles": r["cycles"],
                  "scale_sim": scale_sim_cycles(configs[df], r["m"], r["k"], r["n"])}
                 for df, group in (("ws", rows), ("os", os_rows)) for r in group
                 if r["precision"] == "int8" and r["array"] == CONFIG_16X16.array]
    one_tile = next(r for r in rows if (r["m"], r["n"], r["k"]) == (16, 16, 16))
    path = serial_path(one_tile)
    split = latency_split(one_tile, path)
    pysim = None if args.no_pysim else measure_pysim(CONFIG_16X16)
    ratio = pysim and rows[0]["cycles_per_s"] / pysim["cycles_per_s"]
    _plot(args.plot, rows, pysim)

    report = {"config_16x16": CONFIG_16X16.to_dict(), "config_4x4": CONFIG_4X4.to_dict(),
              "bus_bytes": {"16x16": CONFIG_16X16.bus_bytes, "4x4": CONFIG_4X4.bus_bytes},
              "build_s": builds,
              "gemms": [{key: value for key, value in r.items() if key != "trace"} for r in rows],
              "scale_sim": scale_sim, "serial_path_16": path, "latency_split_16": split, "pysim": pysim, "verilator_over_pysim": ratio, "plot": args.plot}
    if args.json:
        print(json.dumps(report))
        return
    c = CONFIG_16X16
    print(f"config: {c.array} {c.dataflow.upper()}, act/wgt/acc SRAM {c.act_depth}/{c.wgt_depth}/{c.acc_depth} "
          f"words, data bus {c.bus_bytes} B/cycle, energy table {c.energy.name}")
    print(f"        {CONFIG_4X4.array}: act/wgt/acc {CONFIG_4X4.act_depth}/{CONFIG_4X4.wgt_depth}/"
          f"{CONFIG_4X4.acc_depth} words, data bus {CONFIG_4X4.bus_bytes} B/cycle")
    print("build (0 s = cached): " + ", ".join(f"{a} {s:.1f} s" for a, s in builds.items()))
    print("bound = max(compute, data in, data out) + one tile's latency (fill + drain + activation: "
          f"{rows[0]['bound']['latency']} cycles on {c.array}); golden rows run on the cycle model")
    print("util = M*K*N MACs / (cycles * peak MACs per cycle); map T = the transposed product Y^T = W^T A^T "
          "(W streams through the array, A^T stationary; the macs counter also counts its bias-digit K entries)")
    print(f"{'array':>6} {'M':>4} {'N':>4} {'K':>4} {'prec':>4} {'map':>3} {'cycles':>9} {'golden':>9} {'bound':>9} "
          f"{'limit':>8} {'/bound':>6} {'util':>7} {'target':>7} {'busy/cyc':>8} {'energy pJ':>12} {'wall s':>7} "
          f"{'cycles/s':>10}  check")
    for r in rows:
        ok = r["cycles"] == r["golden_cycles"] and r["numerics_ok"] and (r["backend"] == "golden" or (
            r["counters_match_golden"] and r["outputs_match_golden"]))
        target = f"{r['target']:.0%}" if r["target"] is not None else "-"
        bound = r["bound"]
        print(f"{r['array']:>6} {r['m']:>4} {r['n']:>4} {r['k']:>4} {r['precision']:>4} "
              f"{'T' if r['transposed'] else '-':>3} {r['cycles']:>9} "
              f"{r['golden_cycles'] if r['backend'] == 'verilator' else 'golden':>9} {bound['bound']:>9.0f} "
              f"{bound['limit']:>8} {r['cycles'] / bound['bound']:>6.3f} {r['utilization']:>7.1%} {target:>7} "
              f"{r['busy_fraction']:>8.1%} {r['energy_pj']:>12.1f} {r['wall_s']:>7.3f} {r['cycles_per_s']:>10.0f}  "
              f"{'ok' if ok else 'MISMATCH'}")
    for r in rows:
        if r["target"] is not None and r["utilization"] < r["target"]:
            print(f"  MISS: M{r['m']} N{r['n']} K{r['k']} {r['precision']} utilization {r['utilization']:.1%} is "
                  f"{100 * (r['target'] - r['utilization']):.1f} points under {r['target']:.0%}")
        if r["m"] <= 16 and r["cycles"] > SMALL_M_RATIO * r["bound"]["bound"]:
            print(f"  MISS: M{r['m']} N{r['n']} K{r['k']} {r['precision']} (M <= 16) takes "
                  f"{r['cycles'] / r['bound']['bound']:.3f}x its bound (target <= {SMALL_M_RATIO}x)")
    lat = one_tile["bound"]["latency"]
    print(f"16x16x16: {one_tile['cycles']} cycles, bound {one_tile['bound']['bound']:.0f} (data in "
          f"{one_tile['bound']['data_in']:.0f} + latency {lat}); its one tile's stages (golden trace): "
          + " + ".join(f"{name} {cycles}" for name, cycles in path.items()) + f" = {sum(path.values())}")
    print("          = " + " + ".join(
        f"{title} {sum(split[key].values())} (" + ", ".join(f"{name} {cycles}" for name, cycles in split[key].items()
                                                          if cycles) + ")"
        for key, title in (("latency", "pipeline latency"), ("work", "the tile's work"),
                           ("scheduling", "scheduling"))))
    print("SCALE-Sim 3.0 compute cycles (no data transfer: WS ceil(K/16)*ceil(N/16)*(M+46), OS "
          "ceil(M/16)*ceil(N/16)*(K+30)) against opennpu's whole program (every operand over the 16 B/cycle bus):")
    for r in scale_sim:
        print(f"  {r['dataflow'].upper()} M{r['m']:<5} N{r['n']:<5} K{r['k']:<5} opennpu {r['cycles']:>9}  SCALE-Sim "
              f"{r['scale_sim']:>9}  SCALE-Sim / opennpu {r['scale_sim'] / r['cycles']:.2f}")
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
