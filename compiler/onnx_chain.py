"""The chain view of an imported ONNX graph: a ``QuantModel`` (one layer per conv / fully connected node)
that the model compiler fuses on chip, when the graph is a chain; ``NotAChain`` otherwise."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from .onnx_values import OnnxGraph
from .qlayers import QuantModel

__all__ = ["NotAChain", "chain_view"]


class NotAChain(ValueError):
    """The graph is valid but not a chain of NPU layers (``import_onnx``); run it as a graph."""


def chain_view(og: OnnxGraph) -> QuantModel:
    """The graph as a ``QuantModel`` chain: each conv / fully connected node a layer reading the previous
    layer's output (only through the importer's layout transposes, reshapes of flat tensors, and tables,
    which fold into the layer before); ``NotAChain`` naming the first node that breaks the chain."""
    from .graph_npu import lower_node
    graph = og.graph
    readers: dict = {}
    for node in graph.nodes:
        for name in node.inputs:
            readers[name] = readers.get(name, 0) + 1
    layers, src, rep = [], {graph.inputs[0]: -1}, {graph.inputs[0]: "flat"}   # rep: chain order of a tensor

    def refuse(node, why):
        return NotAChain(f"{og.sources.get(node.name, node.op)} node {node.name!r}: {why}; the model runs as a "
                         f"graph")
    for node in graph.nodes:
        x = node.inputs[0]
        if src.get(x) != len(layers) - 1 or readers.get(x, 0) != 1:
            raise refuse(node, "its input is read by several ops or is not the previous layer's output")
        if node.op == "transpose" and (rep[x], node.attrs.perm) in (("flat", (1, 2, 0)), ("chw", (2, 0, 1))):
            rep[node.output] = "chw" if rep[x] == "flat" else "flat"
        elif node.op == "reshape" and rep[x] == "flat":
            rep[node.output] = "flat"
        elif node.op == "lut" and layers:
            _fold_table(layers[-1], np.asarray(node.attrs.table, np.int64))
            layers[-1].out_q = (graph.tensors[node.output].scale[0], graph.tensors[node.output].zero_point[0])
            rep[node.output] = rep[x]
        elif node.op in ("conv2d", "depthwise_conv2d", "fully_connected") and node.attrs.requant is not None and \
                rep[x] == ("flat" if node.op == "fully_connected" else "chw"):
            layers.append(replace(lower_node(graph, node), op=og.sources[node.name]))
            rep[node.output] = rep[x]
            src[node.output] = len(layers) - 1
            continue
        else:
            raise refuse(node, f"{node.op} is not a layer of a chain")
        src[node.output] = src[x]
    out = graph.outputs[0]
    if not layers or src.get(out) != len(layers) - 1 or rep[out] != "flat":
        raise NotAChain("the output is not the result of the last layer of a chain; the model runs as a graph")
    return QuantModel(layers, og.input, og.output)


def _fold_table(layer, table: np.ndarray):
    """A table after a layer: composed with the layer's table, or a narrower clamp when it is one."""
    if layer.lut is not None:
        layer.lut = table[layer.lut + 128]
        return
    span = np.arange(layer.qmin, layer.qmax + 1)
    mapped = table[span + 128]
    lo, hi = int(mapped.min()), int(mapped.max())
    if np.array_equal(mapped, np.clip(span, lo, hi)):     # identity with a clamp: no table needed
        layer.qmin, layer.qmax = max(layer.qmin, lo), min(layer.qmax, hi)
    else:
        layer.lut = table
