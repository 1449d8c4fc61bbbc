"""MLPerf Tiny on the NPU: bit-exactness against LiteRT's reference kernels, cycles per inference
against Arm Ethos-U55-256 (Vela 5.2 estimates, ``models/mlperf_tiny/README.md``), and per layer the
utilization and the bound.

    python benchmarks/bench_mlperf.py [--array 16x16] [--batch 8] [--json]   (this module's ``main``)

Cycles per inference: the sum of ``cycles`` over the NPU programs of one batch-1 inference (default
``NpuConfig`` SRAM depths, weights streamed over the bus). A layer's bound is
max(MACs / (rows * cols), DMA bytes in / bus bytes, DMA bytes out / bus bytes), and for an ADD its
activation-SRAM reads (two words a row through the ACT unit's one port). Host ops are listed
with the bytes they move. Bit-exactness runs a batch of random and structured int8 inputs.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from opennpu.config import NpuConfig

from .graph_npu import run_on_npu
from .graph_report import graph_run_report
from .tflite_import import import_tflite

__all__ = ["MODELS", "ETHOS_U55", "litert_reference", "inputs", "bench_model", "text", "main"]

#: the models in the repository (``models/mlperf_tiny``, with their license)
MODELS = Path(__file__).resolve().parent.parent / "models" / "mlperf_tiny"
#: Vela 5.2, ethos-u55-256, default system config, Shared_Sram (models/mlperf_tiny/README.md)
ETHOS_U55 = {"pretrainedResnet_quant.tflite": ("ResNet-8", 141_933),
             "kws_ref_model.tflite": ("DS-CNN", 58_340)}


def litert_reference(model, x: np.ndarray) -> np.ndarray:
    """LiteRT's reference kernels (``BUILTIN_REF``) on each sample of ``x``; ``model``: a path or the
    flatbuffer's bytes (the MLPerf Tiny files fix batch 1)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    source = {"model_content": model} if isinstance(model, bytes) else {"model_path": str(model)}
    it = Interpreter(**source, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    ys = []
    for sample in x:
        it.set_tensor(inp["index"], sample[None])
        it.invoke()
        ys.append(it.get_tensor(out["index"])[0].copy())
    return np.stack(ys)


def inputs(shape, batch: int, seed: int = 0) -> np.ndarray:
    """``batch`` random int8 inputs, then zeros, all -128, all 127 and a ramp."""
    n = int(np.prod(shape))
    ramp = (np.arange(n) % 256 - 128).astype(np.int8).reshape(shape)
    structured = [np.zeros(shape, np.int8), np.full(shape, -128, np.int8), np.full(shape, 127, np.int8), ramp]
    return np.concatenate([np.random.default_rng(seed).integers(-128, 128, (batch, *shape), dtype=np.int8),
                           np.stack(structured)])


def bench_model(model: Path, config: NpuConfig, batch: int) -> dict:
    graph = import_tflite(model)
    shape = graph.tensors[graph.inputs[0]].shape
    x = inputs(shape, batch)
    t0 = time.perf_counter()
    outputs, _ = run_on_npu(graph, x, config)
    seconds = time.perf_counter() - t0
    diff = np.abs(outputs[0].astype(int) - litert_reference(model, x).astype(int))
    _, single = graph_run_report(graph, x[:1], model.name, "golden", config)     # one batch-1 inference
    peak, bus, total = config.rows * config.cols, config.bus_bytes, single["total"]
    layers = []
    for r in single["layers"]:
        if r["device"] == "npu":
            terms = {"compute": r["macs"] / peak, "bandwidth": max(r["dma_in_bytes"], r["dma_out_bytes"]) / bus}
            if r["op"] == "add":
                terms["act unit"] = r["counters"]["act_reads"]
            kind = max(terms, key=terms.get)
            r = dict(r, bound=terms[kind], bound_kind=kind, cycles_over_bound=r["cycles"] / terms[kind])
        layers.append(r)
    cycles = total["cycles"]
    name, ethos = ETHOS_U55[model.name]
    return {"model": name, "file": model.name, "array": f"{config.rows}x{config.cols}",
            "inputs_checked": len(x), "max_lsb_diff": int(diff.max()), "bit_exact": bool(diff.max() == 0),
            "golden_seconds": seconds, "cycles_per_inference": cycles, "ethos_u55_cycles": ethos,
            "ratio_vs_ethos": cycles / ethos,
            "energy_fj": total["energy_fj"], "host_bytes": total["host_bytes"], "layers": layers}


def text(result: dict) -> str:
    r = result
    lines = [f"{r['model']} ({r['file']}) on {r['array']}: bit-exact with LiteRT BUILTIN_REF on "
             f"{r['inputs_checked']} inputs: {'yes' if r['bit_exact'] else 'NO'} (max {r['max_lsb_diff']} LSB), "
             f"golden {r['golden_seconds']:.1f} s",
             f"  cycles per inference {r['cycles_per_inference']:,} vs Ethos-U55-256 {r['ethos_u55_cycles']:,} "
             f"(ratio {r['ratio_vs_ethos']:.2f}; < 1 is faster), energy {r['energy_fj'] / 1e9:.1f} uJ, "
             f"host ops move {r['host_bytes']:,} B",
             f"  {'op':<18}{'dev':<5}{'cycles':>9}{'bound':>9}{'x bound':>8}{'util':>7}  {'bound by':<10}"
             f"{'bus in B':>9}{'bus out B':>10}  name   (bus: the bytes that cross the host bus; cpu rows: "
             f"the bytes the host op moves)"]
    for layer in r["layers"]:
        if layer["device"] == "npu":
            lines.append(f"  {layer['op']:<18}npu  {layer['cycles']:>9,}{layer['bound']:>9,.0f}"
                         f"{layer['cycles_over_bound']:>8.2f}{100 * layer['utilization']:>6.1f}%  "
                         f"{layer['bound_kind']:<10}{layer['dma_in_bytes']:>9,}{layer['dma_out_bytes']:>10,}  "
                         f"{_short(layer['name'])}")
        else:
            lines.append(f"  {layer['op']:<18}cpu  {'':>9}{'':>9}{'':>8}{'':>7}  {'':<10}{layer['host_bytes']:>9,}"
                         f"{'':>10}  {_short(layer['name'])}")
    return "\n".join(lines)


def _short(name: str, width: int = 48) -> str:
    """TFLite tensor names list every fused op; the last ``width`` characters name the layer."""
    return name if len(name) <= width else "..." + name[-width + 3:]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--array", default="16x16")
    parser.add_argument("--batch", type=int, default=8, help="random inputs checked (plus 4 structured)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows, cols = (int(v) for v in args.array.split("x"))
    config = NpuConfig(rows=rows, cols=cols)
    results = [bench_model(MODELS / name, config, args.batch) for name in ETHOS_U55]
    print(json.dumps(results, indent=1) if args.json else "\n\n".join(text(r) for r in results))
    return 0 if all(r["bit_exact"] for r in results) else 1

