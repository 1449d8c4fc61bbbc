"""Run an imported graph for ``opennpu run`` and report every op: where it ran (``npu`` or ``cpu``),
its cycles, utilization, energy and DMA bytes on the NPU, or the bytes it moved on the host; and the
totals (cycles per inference = the sum over the NPU programs, MACs and the share that ran on the NPU).
``graph_layers`` gives ``opennpu report`` the NPU layers of a graph with the activations they see.
"""
from __future__ import annotations

from opennpu.config import NpuConfig

import numpy as np

from .gemm import GemmSpec
from .graph import Graph
from .graph_npu import host_bytes, layer_input, lowered, npu_runs, random_graph_input, run_on_npu
from .host_kernels import run_node
from .report import Layer

__all__ = ["graph_run_report", "graph_layers"]


def graph_run_report(graph: Graph, x, model: str, backend: str, config: NpuConfig | None = None) -> tuple:
    """Run ``graph`` for the batched input ``x`` (NPU ops on ``backend``); returns ``(outputs, report)``,
    the report a JSON-ready dict with one entry per op."""
    config = NpuConfig() if config is None else config
    outputs, layers = run_on_npu(graph, x, config, backend)
    npu = [layer for layer in layers if layer["device"] == "npu"]
    macs = sum(layer["macs"] for layer in layers)
    npu_macs = sum(layer["macs"] for layer in npu)
    cycles = sum(layer["cycles"] for layer in npu)
    total = {"ops": len(layers), "npu_ops": len(npu), "cpu_ops": len(layers) - len(npu), "macs": macs,
             "npu_mac_fraction": npu_macs / macs if macs else 0.0, "cycles": cycles,
             "cycles_per_inference": cycles / len(x),
             "utilization": sum(layer["utilization"] * layer["cycles"] for layer in npu) / cycles if cycles else 0.0,
             "energy_fj": sum(layer["energy_fj"] for layer in npu),
             "dma_in_bytes": sum(layer["dma_in_bytes"] for layer in npu),
             "dma_out_bytes": sum(layer["dma_out_bytes"] for layer in npu),
             "host_bytes": sum(layer["host_bytes"] for layer in layers if layer["device"] == "cpu")}
    report = {"model": model, "backend": backend, "array": f"{config.rows}x{config.cols}", "batch": len(x),
              "layers": layers, "total": total}
    return outputs, report


def graph_layers(graph: Graph, config: NpuConfig, batch: int = 8, seed: int = 0) -> tuple:
    """``(layers, host_ops)`` for ``opennpu report``: one ``Layer`` per program an NPU node runs as (named
    ``node`` or ``node[i]``), with the activations it sees for a batch of random int8 inputs (cycles,
    bytes and energy do not depend on the values: ``graph_npu.random_graph_input``); and, for each other
    op, its name, op, ``device`` and the bytes it reads and writes: the host ops (``cpu``), and an ``add``
    that the NPU runs elementwise (``npu``: no GEMM to compare; ``opennpu run`` counts its cycles)."""
    x = random_graph_input(graph, batch, seed)
    values, layers, host = {graph.inputs[0]: x if x.dtype == np.float32 else x.astype(np.int64)}, [], []
    for node in graph.nodes:
        y = run_node(graph, node, values)
        if npu_runs(graph, node, config) and node.op != "add":
            pairs = lowered(graph, node, values, config)
            for i, (layer, xin) in enumerate(pairs):
                spec = GemmSpec(layer.matrix(layer_input(layer, xin)), layer.w, layer.bias, layer.multiplier,
                                layer.shift, layer.out_zp, layer.qmin, layer.qmax, layer.lut,
                                single_round=layer.single_round, raw=layer.raw)
                layers.append(Layer(node.name if len(pairs) == 1 else f"{node.name}[{i}]", spec))
        else:
            host.append({"name": node.name, "op": node.op, "device": "npu" if npu_runs(graph, node, config) else "cpu",
                         "bytes": host_bytes(node, values, y)})
        values[node.output] = y
    return layers, host
