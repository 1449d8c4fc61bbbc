"""Run an imported graph for ``opennpu run`` and describe every op: where it ran, what it computes.

Today every op runs on the host kernels (``host_kernels.run_graph``): the NPU mapping of graph IR
segments is not done, so each op is reported with ``device`` ``"cpu"`` and, from ``partition``,
whether it is an NPU candidate.
"""
from __future__ import annotations

import numpy as np

from .graph import Graph, Node
from .host_kernels import run_graph
from .partition import partition

__all__ = ["node_macs", "graph_run_report"]


def node_macs(graph: Graph, node: Node) -> int:
    """Multiply-accumulates of one sample (0 for ops without a matrix product)."""
    out = graph.tensors[node.output].shape
    if node.op in ("conv2d", "depthwise_conv2d"):
        w = graph.tensors[node.inputs[1]].data.shape
        taps = w[1] * w[2] * (w[3] if node.op == "conv2d" else 1)
        return int(np.prod(out)) * taps
    if node.op == "fully_connected":
        return int(np.prod(graph.tensors[node.inputs[1]].data.shape))
    return 0


def graph_run_report(graph: Graph, x, model: str, backend: str) -> tuple:
    """Run ``graph`` on the host for the batched input ``x``; returns ``(outputs, report)``, the report
    a JSON-ready dict with one entry per op."""
    if backend != "golden":
        raise ValueError(f"backend {backend!r}: TFLite models run only with --backend golden for now "
                         f"(every op on the host kernels; the NPU mapping is not done)")
    outputs = run_graph(graph, x)
    layers = []
    for s, segment in enumerate(partition(graph)):
        for node in segment.nodes:
            layers.append({"index": len(layers), "name": node.name, "op": node.op, "device": "cpu",
                           "npu_candidate": segment.device == "npu", "segment": s,
                           "output_shape": list(graph.tensors[node.output].shape),
                           "macs": node_macs(graph, node) * len(x)})
    report = {"model": model, "backend": backend, "batch": len(x), "layers": layers,
              "total": {"ops": len(layers), "npu_ops": 0, "cpu_ops": len(layers),
                        "macs": sum(layer["macs"] for layer in layers)},
              "note": "NPU mapping of TFLite graphs is not done yet: every op ran on the host kernels"}
    return outputs, report
