"""``opennpu report``: NPU vs GPU/CPU report (Markdown + PNG plots) for a model or a list of GEMMs."""
from __future__ import annotations

from opennpu.cli_common import check_input_file, check_output_dir, config_from_args, emit, fail

__all__ = ["register"]


def register(sub):
    p = sub.add_parser("report", help="per-layer NPU vs GPU/CPU report with plots")
    p.add_argument("model", nargs="?", help="quantized ONNX model (QDQ or QLinear ops) or int8 TFLite model")
    p.add_argument("--gemm", action="append", default=[], metavar="MxKxN[:act]",
                   help="report random GEMM layers instead of a model (repeatable)")
    p.add_argument("--array", default="8x8")
    p.add_argument("--dataflow", default="ws", choices=("ws",))
    p.add_argument("--act-depth", type=int, default=None)
    p.add_argument("--wgt-depth", type=int, default=None)
    p.add_argument("--acc-depth", type=int, default=None)
    p.add_argument("--fpga-mhz", type=float, default=None, help="FPGA clock for the latency column "
                   "(default: a nominal 50 MHz; no measured Fmax exists yet)")
    p.add_argument("--asic-mhz", type=float, default=1000.0)
    p.add_argument("--gpu", action="store_true", help="time the PyTorch reference (CUDA when present)")
    p.add_argument("-o", "--output", default="report", help="output folder")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_report)


def _gemm_layers(texts):
    from opennpu.compiler.gemm import ACTIVATIONS, random_gemm
    from opennpu.compiler.report import Layer
    layers = []
    for i, text in enumerate(texts):
        shape, _, act = text.partition(":")
        try:
            m, k, n = (int(v) for v in shape.lower().split("x"))
        except ValueError:
            raise ValueError(f"--gemm must look like MxKxN[:act], got {text!r}") from None
        if act and act not in ACTIVATIONS:
            raise ValueError(f"unknown activation {act!r} in --gemm {text!r}; expected one of {ACTIVATIONS}")
        layers.append(Layer(f"gemm{i}", random_gemm(m, k, n, "int8", act or "none", seed=i)))
    return layers


def _model_layers(model: str, config) -> tuple:
    """(layers, fused vs unfused counters or None, host ops or None): a chain from the model compiler,
    a graph (a TFLite model, an ONNX model that is not a chain) node by node."""
    from opennpu.compiler.graph_report import graph_layers
    if model.lower().endswith(".tflite"):
        from opennpu.compiler.tflite_import import import_tflite
        layers, host = graph_layers(import_tflite(model), config)
        return layers, None, host
    from opennpu.compiler.model_report import model_layers
    from opennpu.compiler.onnx_import import NotAChain, import_onnx_graph
    try:
        return (*model_layers(model, config), None)
    except NotAChain:
        layers, host = graph_layers(import_onnx_graph(model).graph, config)
        return layers, None, host


def _cmd_report(args) -> int:
    from opennpu.compiler.report import write_report
    if bool(args.model) == bool(args.gemm):
        return fail(args, "give either MODEL.onnx or one or more --gemm MxKxN")
    check_output_dir(args.output, "-o")
    if args.model:
        check_input_file(args.model, "model")
    config = config_from_args(args)
    fused, host = None, None
    if args.model:
        layers, fused, host = _model_layers(args.model, config)
        if not layers:
            return fail(args, f"{args.model}: no op runs on the NPU ({len(host or [])} host ops: "
                              f"{', '.join(sorted({h['op'] for h in host or []}))}), so there is nothing to "
                              f"report; `opennpu run` shows where each op runs")
        title = args.model
    else:
        layers, title = _gemm_layers(args.gemm), "GEMM layers"
    report = write_report(layers, config, args.output, fpga_mhz=args.fpga_mhz, asic_mhz=args.asic_mhz,
                          gpu=args.gpu, fused=fused, title=title, progress=not args.json, host_ops=host)
    t = report["total"]
    emit(args, {**report, "output": args.output},
         f"wrote {args.output}/report.md: {len(report['layers'])} layers, {t['cycles']} cycles, "
         f"{t['energy_pj'] / 1e6:.3f} uJ, {t['dma_bytes']} DMA bytes")
    return 0
