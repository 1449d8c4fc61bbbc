"""``opennpu run MODEL.onnx|MODEL.tflite --input x.npy``: compile a quantized ONNX model that is a chain
of layers, run it on a backend, print per-layer and total cycles, utilization, energy and DMA bytes (and
what on-chip chaining saved). Any other ONNX graph (residual adds, pools, ...) and every int8 TFLite
model run their convolutions, fully connected layers and pools on the NPU and the other ops on the host
kernels (``compiler/graph_npu.py``); the report lists every op with the device it ran on."""
from __future__ import annotations

import numpy as np

from opennpu.cli_common import (add_config_args, busy, check_input_file, check_output_file, config_from_args, emit,
                                 fail)

__all__ = ["register", "run_report"]


def register(sub):
    run = sub.add_parser("run", help="run a quantized ONNX model (QDQ or QLinear ops) or an int8 TFLite "
                                     "model on the NPU")
    run.add_argument("model", help="quantized ONNX model, or int8 TFLite model (.tflite)")
    run.add_argument("--input", required=True, help=".npy input, batch first")
    run.add_argument("--output", help="write the model output to this .npy file")
    run.add_argument("--backend", default="golden", choices=("golden", "pysim", "verilator"))
    run.add_argument("--no-fuse", action="store_true",
                     help="send every layer's output to the host (no on-chip chaining)")
    add_config_args(run, precision=False)
    run.set_defaults(func=_cmd_run)


def _figures(c: dict, pes: int) -> dict:
    cycles = c["cycles"]
    return {"cycles": cycles, "busy_cycles": c["busy_cycles"], "stall_cycles": c["stall_cycles"],
            "macs": c["macs"], "utilization": c["macs"] / (cycles * pes) if cycles else 0.0,
            "energy_pj": c["energy_fj"] / 1000, "dma_in_bytes": c["dma_in_bytes"],
            "dma_out_bytes": c["dma_out_bytes"], "dma_bytes": c["dma_in_bytes"] + c["dma_out_bytes"]}


def run_report(model, x: np.ndarray, config, backend: str = "golden", fuse: bool = True) -> tuple:
    """Compile ``model`` for ``config`` and ``x``'s batch, run it on ``backend``; returns
    ``(outputs, report)``. Per-layer figures come from a profiled build run on the golden model
    (``COUNTERS`` at each layer boundary, cycle-exact with the RTL); totals from the plain build on
    ``backend``; ``unfused`` from a build with every layer's output sent to the host."""
    from opennpu.compiler.model_program import compile_model, run_model
    from opennpu.compiler.onnx_import import import_onnx

    qm = import_onnx(model)
    batch = x.shape[0] if qm.input.batch is None and x.ndim else None
    compiled = compile_model(qm, config, batch=batch, fuse=fuse)
    compiled.check_input(x)
    result = run_model(compiled, x, backend)
    profiled = run_model(compile_model(qm, config, batch=batch, fuse=fuse, profile=True), x, "golden")
    unfused = run_model(compile_model(qm, config, batch=batch, fuse=False), x, "golden") if fuse else result
    pes = config.rows * config.cols
    layers = [{"index": info.index, "name": info.name, "op": info.op, "m": info.m, "k": info.k, "n": info.n,
               "stage": info.stage, "input": info.input, "output": info.output, "lut": info.lut,
               **_figures(c, pes)} for info, c in zip(compiled.layers, profiled.layer_counters)]
    report = {"model": str(model), "backend": backend, "array": config.array, "batch": compiled.batch,
              "programs": compiled.stages, "fused": fuse, "layers": layers,
              "total": _figures(result.counters, pes), "unfused": _figures(unfused.counters, pes)}
    return result.outputs, report


def _text(r: dict) -> str:
    lines = [f"{r['model']}: batch {r['batch']} on {r['array']} [{r['backend']}], {len(r['layers'])} layers in "
             f"{r['programs']} program(s)",
             f"  {'layer':<28}{'op':<14}{'M x K x N':>18}{'in/out':>11}{'cycles':>10}{'util':>7}"
             f"{'energy nJ':>11}{'DMA bytes':>11}"]
    for layer in r["layers"]:
        shape = f"{layer['m']}x{layer['k']}x{layer['n']}"
        lines.append(f"  {layer['name'][:27]:<28}{layer['op'] + ('+LUT' if layer['lut'] else ''):<14}{shape:>18}"
                     f"{layer['input'] + '/' + layer['output']:>11}{layer['cycles']:>10}"
                     f"{layer['utilization']:>7.1%}{layer['energy_pj'] / 1000:>11.1f}{layer['dma_bytes']:>11}")
    t, u = r["total"], r["unfused"]
    lines.append(f"  {'total':<28}{'':<14}{'':>18}{'':>11}{t['cycles']:>10}{t['utilization']:>7.1%}"
                 f"{t['energy_pj'] / 1000:>11.1f}{t['dma_bytes']:>11}")
    if r["fused"]:
        lines.append(f"  on-chip chaining saves {u['dma_bytes'] - t['dma_bytes']} DMA bytes "
                     f"({u['dma_bytes']} unfused) and {(u['energy_pj'] - t['energy_pj']) / 1000:.1f} nJ; "
                     f"cycles {t['cycles']} vs {u['cycles']} unfused")
    lines.append("  (per-layer rows: profiled build, COUNTERS at layer boundaries; totals: plain build)")
    return "\n".join(lines)


def _graph_text(r: dict) -> str:
    t = r["total"]
    lines = [f"{r['model']}: batch {r['batch']} on {r['array']} [{r['backend']}], {t['ops']} ops "
             f"({t['npu_ops']} on the NPU, {t['cpu_ops']} on the host)",
             f"  {'#':>3} {'op':<18}{'device':<7}{'output':<12}{'MACs':>11}{'cycles':>10}{'util':>7}"
             f"{'host B':>9}  name"]
    for layer in r["layers"]:
        shape = "x".join(map(str, layer["output_shape"]))
        npu = layer["device"] == "npu"
        cycles = f"{layer['cycles']:>10}" if npu else f"{'':>10}"
        util = f"{100 * layer['utilization']:>6.1f}%" if npu else f"{'':>7}"
        host = f"{'':>9}" if npu else f"{layer['host_bytes']:>9}"
        lines.append(f"  {layer['index']:>3} {layer['op']:<18}{layer['device']:<7}{shape:<12}{layer['macs']:>11}"
                     f"{cycles}{util}{host}  {layer['name']}")
    lines.append(f"  total: {t['cycles']} NPU cycles ({t['cycles_per_inference']:.0f} per inference), "
                 f"utilization {100 * t['utilization']:.1f} %, {100 * t['npu_mac_fraction']:.1f} % of "
                 f"{t['macs']} MACs on the NPU, energy {t['energy_fj'] / 1e6:.2f} nJ, DMA in/out "
                 f"{t['dma_in_bytes']}/{t['dma_out_bytes']} B, host ops moved {t['host_bytes']} B")
    return "\n".join(lines)


def _run_graph(args, x) -> int:
    """A TFLite model, or an ONNX model that is not a chain: every op where it runs (NPU or host)."""
    from opennpu.sim.driver import BackendUnavailable
    try:
        from opennpu.compiler.graph_report import graph_run_report
        if args.model.lower().endswith(".tflite"):
            from opennpu.compiler.tflite_import import import_tflite
            graph, onnx_model = import_tflite(args.model), None
        else:
            from opennpu.compiler.onnx_import import import_onnx_graph
            onnx_model = import_onnx_graph(args.model)
            graph, x = onnx_model.graph, onnx_model.quantize_input(x)
    except ImportError as error:
        return fail(args, f"{error}; install the models extra (pip install 'opennpu[models]')")
    if args.output and len(graph.outputs) != 1:
        return fail(args, f"the model has {len(graph.outputs)} outputs; --output writes one")
    try:
        with busy(args, f"{args.model} on {args.backend}"):
            outputs, report = graph_run_report(graph, x, args.model, args.backend, config_from_args(args))
    except BackendUnavailable as error:
        return fail(args, f"backend {args.backend!r} unavailable: {error}")
    if args.output:
        np.save(args.output, outputs[0] if onnx_model is None else onnx_model.output.value(outputs[0]))
    report["outputs"] = args.output
    emit(args, report, _graph_text(report))
    return 0


def _cmd_run(args) -> int:
    from opennpu.sim.driver import BackendUnavailable
    if args.output:                       # checked first: a bad path must not lose a long run's result
        if not args.output.endswith(".npy"):
            return fail(args, f"--output {args.output!r} must end in .npy (it is written with numpy.save)")
        check_output_file(args.output, "--output")
    check_input_file(args.model, "model")
    try:
        x = np.load(args.input)
    except (OSError, ValueError, EOFError) as error:
        return fail(args, f"cannot read input {args.input!r}: {error}")
    if args.model.lower().endswith(".tflite"):
        return _run_graph(args, x)
    from opennpu.compiler.onnx_import import NotAChain
    try:
        with busy(args, f"{args.model} on {args.backend}"):
            outputs, report = run_report(args.model, x, config_from_args(args), args.backend, not args.no_fuse)
    except NotAChain:
        return _run_graph(args, x)
    except ImportError as error:
        return fail(args, f"{error}; install onnx (pip install onnx)")
    except BackendUnavailable as error:
        return fail(args, f"backend {args.backend!r} unavailable: {error}")
    if args.output:
        np.save(args.output, outputs)
    report["outputs"] = args.output
    emit(args, report, _text(report))
    return 0
