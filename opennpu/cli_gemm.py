"""``opennpu gemm`` (random quantized GEMM, run and verify), ``opennpu sim`` (the same on the RTL
with a waveform) and ``opennpu export`` (Verilog)."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from opennpu.cli_common import add_config_args, busy, check_output_file, config_from_args, emit, fail

__all__ = ["register", "run_gemm", "gemm_memory_bytes"]


def register(sub):
    gemm = sub.add_parser("gemm", help="run a random quantized GEMM and verify it")
    _gemm_args(gemm)
    gemm.add_argument("--backend", default="golden", choices=("golden", "pysim", "verilator"))
    gemm.add_argument("--backpressure", type=int, default=None, metavar="SEED",
                      help="RTL backends: random valid/ready gaps on every stream")
    gemm.set_defaults(func=_cmd_gemm)

    sim = sub.add_parser("sim", help="run a random GEMM on the RTL and write a waveform")
    _gemm_args(sim)
    sim.add_argument("--backend", default="pysim", choices=("pysim", "verilator"))
    sim.add_argument("--vcd", help="VCD waveform path (a GTKWave .gtkw save file is written beside it)")
    sim.add_argument("--fst", help="FST waveform path (verilator backend)")
    sim.set_defaults(func=_cmd_sim)

    export = sub.add_parser("export", help="write the NPU as Verilog")
    add_config_args(export, precision=False)
    export.add_argument("-o", "--output", required=True, help="Verilog file to write")
    export.set_defaults(func=_cmd_export)


def _gemm_args(parser):
    parser.add_argument("--m", type=int, required=True)
    parser.add_argument("--k", type=int, required=True)
    parser.add_argument("--n", type=int, required=True)
    add_config_args(parser)
    parser.add_argument("--act", default="none",
                        choices=("none", "relu", "relu6", "gelu", "silu", "sigmoid", "tanh"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-gb", type=float, default=4.0,
                        help="refuse a GEMM estimated to need more host memory than this (default 4 GB)")
    parser.add_argument("--torch", action="store_true",
                        help="also check the result against the PyTorch reference (imports torch: 2-3 s); "
                             "without it the result is checked against the direct numpy numerics only")


def gemm_memory_bytes(m: int, k: int, n: int) -> int:
    """Rough host memory of one CLI GEMM run (operands, expected and decoded outputs, the program and
    its data-in, the golden model's trace): measured about 250 bytes per row plus 70-90 per element,
    plus, for long K, the data-in of activation tiles streamed once per N tile (about one byte per 16
    MACs on 16 columns; 2048^3 on 16x16: 1.5 GB peak)."""
    return 256 * m + 96 * (m * k + m * n + k * n) + m * k * n // 16


def run_gemm(config, m, k, n, *, precision="int8", act="none", seed=0, backend="golden",
             torch_reference: bool = False, **options) -> dict:
    """Build, run and verify one random GEMM; returns the report dict the CLI prints.

    The result is always checked against the direct numpy numerics (``GemmSpec.expected``, check
    ``numerics``); ``torch_reference`` adds the PyTorch reference (``golden.reference``, check
    ``torch_reference``; skipped without torch), which costs torch's import (2-3 s). ``utilization`` is
    M*K*N over cycles times PEs (the ``macs`` counter also counts the bias-digit MACs of a ``transposed``
    program, ``compiler.gemm.transposed_spec``). ``wall_s`` is the
    golden (or RTL) run alone, ``compile_s`` the program build, ``build_s`` the Verilator model's build
    (None on other backends; a cached model takes well under a second), so that ``sim_cycles_per_s``
    is the simulation rate alone."""
    from opennpu.compiler.gemm import build_gemm, random_gemm
    from opennpu.golden.model import GoldenNpu
    from opennpu.sim.driver import Npu

    npu = Npu(config, backend, **options)          # refuses options the backend does not have
    spec = random_gemm(m, k, n, precision, act, seed)
    start = time.perf_counter()
    gp = build_gemm(config, spec)
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    golden = GoldenNpu(config).run(gp.program)
    wall = time.perf_counter() - start
    result, build_s = golden, None
    if backend == "verilator":
        from opennpu.sim.verilator import build_harness
        start = time.perf_counter()
        build_harness(config, "vcd" if options.get("vcd") else "fst" if options.get("fst") else None)
        build_s = time.perf_counter() - start
    if backend != "golden":
        start = time.perf_counter()
        result = npu.run(gp.program)
        wall = time.perf_counter() - start

    out = gp.decode_output(result.outputs)
    checks = {"numerics": bool(np.array_equal(out, spec.expected())),
              "golden_outputs": result.outputs == golden.outputs}
    stalls = result.counters["stall_cycles"]
    checks["golden_counters"] = all(
        result.counters[name] == golden.counters[name] + (stalls if name in ("cycles", "stall_cycles") else 0)
        for name in golden.counters)
    checks["error_free"] = int(result.error) == 0
    reference_device = None
    if torch_reference:
        try:
            from opennpu.golden.reference import gemm_reference, reference_device as pick
            reference_device = pick()
            ref = gemm_reference(spec.a, spec.w, spec.bias, spec.multiplier, spec.shift, spec.out_zp,
                                 spec.qmin, spec.qmax, spec.lut)
            checks["torch_reference"] = bool(np.array_equal(out, ref))
        except ImportError:
            pass                           # torch is optional (extra "ref")

    c = result.counters
    pes = config.rows * config.cols
    return {
        "verified": all(checks.values()), "checks": checks, "backend": backend, "array": config.array,
        "dataflow": config.dataflow, "precision": precision, "act": act, "shape": [m, k, n],
        "bus_bytes": config.bus_bytes, "cycles": c["cycles"], "busy_cycles": c["busy_cycles"],
        "stall_cycles": c["stall_cycles"], "macs": c["macs"], "transposed": gp.transposed,
        "utilization": m * k * n / (c["cycles"] * pes), "busy_fraction": c["busy_cycles"] / c["cycles"],
        "energy_pj": c["energy_fj"] / 1000, "counters": c, "wall_s": wall, "compile_s": compile_s,
        "build_s": build_s,
        "sim_cycles_per_s": c["cycles"] / wall if backend != "golden" and wall > 0 else None,
        "reference_device": reference_device,
    }


def _text(report: dict) -> str:
    m, k, n = report["shape"]
    lines = [f"GEMM {m}x{k} @ {k}x{n} ({report['precision']}, act={report['act']}) on {report['array']} "
             f"{report['dataflow'].upper()} [{report['backend']}]",
             f"  verified      {report['verified']}  {report['checks']}",
             f"  cycles        {report['cycles']}  (busy {report['busy_cycles']}, stall {report['stall_cycles']})",
             f"  utilization   {report['utilization']:.1%}  (MACs {report['macs']}"
             + (", computed as Y^T = W^T A^T, bias digits included" if report["transposed"] else "") + ")",
             f"  energy        {report['energy_pj']:.1f} pJ",
             f"  wall          {report['wall_s']:.2f} s  (compile {report['compile_s']:.2f} s"
             + ("" if report["build_s"] is None else f", Verilator build {report['build_s']:.1f} s before it") + ")"]
    return "\n".join(lines)


def _run(args, backend, **options) -> int:
    from opennpu.sim.driver import BackendUnavailable
    config = config_from_args(args)
    need = gemm_memory_bytes(args.m, args.k, args.n) / 1e9
    if need > args.max_gb:
        return fail(args, f"GEMM {args.m}x{args.k}x{args.n} needs about {need:.1f} GB of host memory "
                          f"(estimated), over --max-gb {args.max_gb:g}; use smaller dimensions or raise --max-gb")
    note = " (a first run on a configuration builds the model: minutes)" if backend == "verilator" else ""
    try:
        with busy(args, f"GEMM {args.m}x{args.k}x{args.n} on {backend}{note}"):
            report = run_gemm(config, args.m, args.k, args.n, precision=args.precision, act=args.act,
                              seed=args.seed, backend=backend, torch_reference=args.torch, **options)
    except BackendUnavailable as error:
        return fail(args, f"backend {backend!r} unavailable: {error}")
    emit(args, report, _text(report))
    return 0 if report["verified"] else 1


def _cmd_gemm(args) -> int:
    return _run(args, args.backend, backpressure=args.backpressure)


def _cmd_sim(args) -> int:
    if args.fst and args.backend != "verilator":
        return fail(args, "--fst needs --backend verilator (Amaranth's simulator writes VCD)")
    options = {}
    if args.vcd:
        options.update(vcd=args.vcd, gtkw=args.vcd.rsplit(".", 1)[0] + ".gtkw")
    if args.fst:
        options.update(fst=args.fst)
    for flag in ("vcd", "fst"):
        if flag in options:
            check_output_file(options[flag], f"--{flag}")
    try:
        return _run(args, args.backend, **options)
    except KeyboardInterrupt:
        written = [path for path in options.values() if Path(path).exists()]
        for path in written:
            Path(path).unlink()
        raise KeyboardInterrupt(f"removed the partial waveform files {', '.join(written)}" if written
                                else "") from None


def _cmd_export(args) -> int:
    from amaranth.back import verilog

    from opennpu.hdl.top import NpuTop
    check_output_file(args.output, "-o")
    config = config_from_args(args)
    text = verilog.convert(NpuTop(config), name="opennpu_top")
    with open(args.output, "w") as f:
        f.write(text)
    emit(args, {"output": args.output, "array": config.array, "bytes": len(text), "config": config.to_dict()},
         f"wrote {args.output} ({len(text)} bytes, {config.array})")
    return 0
