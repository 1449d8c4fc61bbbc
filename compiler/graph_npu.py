"""Run a graph IR ``Graph`` with its convolutions and fully connected layers on the NPU, the rest on the
host kernels.

Each NPU node is lowered to one ``QLayer`` (``lower_node``) and compiled for the configuration with the
model compiler (``model_program.compile_model``): weights in the array's layout, the input zero point
folded into the bias, per-channel multipliers and shifts (``LOAD_QUANT``) and the rounding the source
format uses (``CONFIG single_round``). Layouts: the graph is channels-last (TFLite), the NPU's conv
layers take (C, H, W), so the host transposes an NPU node's input and output, and builds the im2col
rows of a convolution (the model compiler's host glue), which is the host traffic the run reports.

Lowerings, all exact against the host kernels (``host_kernels``, TFLite's reference arithmetic):

* ``conv2d``: weights (O, kh, kw, I) -> K x N with K in (channel, kernel row, kernel column) order.
* ``fully_connected``: weights (N, K) -> K x N; the input is flattened channels-last, as TFLite does.
* ``depthwise_conv2d``: cut into groups of ``cols`` input channels (one N tile of outputs each), each a
  dense convolution with block-diagonal weights (output channel ``c*M + m`` reads only input channel
  ``c``), one NPU program per group. Exact, but a K tile of a group feeds only its own channels'
  columns, so utilization is at most ``1 / cols`` (6 % on 16x16), which the per-layer report shows. A
  depthwise mapping that uses the array well (row-stationary, or a dedicated lane) is not built yet.

``run_on_npu`` returns the outputs and one record per node (device, cycles, utilization, energy, DMA
bytes, all counters, the GEMMs it ran as [M, K, N]); host nodes report the bytes their inputs and
outputs occupy.
"""
from __future__ import annotations

import numpy as np

from opennpu.config import NpuConfig
from opennpu.golden import numerics

from .graph import Graph, Node
from .host_kernels import check_graph_input, run_node
from .model_program import compile_model, run_model
from .qlayers import ConvGeom, QLayer, QuantModel, TensorSpec

__all__ = ["NPU_OPS", "lower_node", "run_on_npu"]

#: graph IR ops the NPU runs
NPU_OPS = frozenset({"conv2d", "depthwise_conv2d", "fully_connected"})


def _dense_depthwise(w: np.ndarray, channels: int) -> np.ndarray:
    """Depthwise weights (1, kh, kw, I*M) -> dense conv weights (I*M, kh, kw, I), block-diagonal."""
    _, kh, kw, out = w.shape
    dense = np.zeros((out, kh, kw, channels), np.int64)
    for o in range(out):
        dense[o, :, :, o // (out // channels)] = w[0, :, :, o]
    return dense


def lower_node(graph: Graph, node: Node, channels: slice = slice(None)) -> QLayer:
    """One NPU node -> a ``QLayer`` (conv layers take and give (C, H, W); FC layers flat vectors).
    ``channels``: a depthwise node's input channels (and their output channels) to lower."""
    if node.op not in NPU_OPS:
        raise ValueError(f"node {node.name!r}: {node.op} has no NPU lowering (NPU ops: {sorted(NPU_OPS)})")
    x_t, w_t = graph.tensors[node.inputs[0]], graph.tensors[node.inputs[1]]
    out_t = graph.tensors[node.output]
    a, r = node.attrs, node.attrs.requant
    w = np.asarray(w_t.data, np.int64)
    n = out_t.shape[-1]
    bias = np.zeros(n, np.int64) if node.inputs[2] is None else np.asarray(graph.tensors[node.inputs[2]].data,
                                                                            np.int64)
    multiplier, shift = np.broadcast_to(r.multiplier, (n,)), np.broadcast_to(r.shift, (n,))
    if node.op == "depthwise_conv2d":          # output channels c*M .. c*M+M-1 of the chosen inputs
        per = n // x_t.shape[-1]
        c0, c1, _ = channels.indices(x_t.shape[-1])
        outs = slice(c0 * per, c1 * per)
        w, bias, multiplier, shift = w[..., outs], bias[outs], multiplier[outs], shift[outs]
    geom = None
    if node.op == "fully_connected":
        matrix, in_shape = w.T, (int(np.prod(x_t.shape)),)
    else:
        h, wd, c = x_t.shape
        if node.op == "depthwise_conv2d":
            c = len(range(*channels.indices(c)))
            w = _dense_depthwise(w, c)
        win = a.window
        pads = tuple(max(p, 0) for p in win.pads)   # (negative: rows the last window does not reach)
        geom = ConvGeom((c, h, wd), win.kernel, win.stride, pads, win.dilation, 1)
        if geom.out_hw != tuple(out_t.shape[:2]):
            raise ValueError(f"node {node.name!r}: output {out_t.shape[:2]} but the window gives {geom.out_hw}")
        matrix, in_shape = w.transpose(3, 1, 2, 0).reshape(-1, w.shape[0]), (c, h, wd)
    # The NPU multiplies plain int8 activations: fold the input zero point into the bias (int32 ring).
    folded = numerics.wrap_int32(bias - a.in_zp * matrix.sum(axis=0))
    if len(r.multiplier) > 1:
        multiplier, shift = np.asarray(multiplier, np.int64), np.asarray(shift, np.int64)
    else:
        multiplier, shift = int(r.multiplier[0]), int(r.shift[0])
    return QLayer(node.name, node.op, matrix, folded, multiplier, shift, r.out_zp, r.qmin, r.qmax, None,
                  in_shape, (x_t.scale[0], a.in_zp), (out_t.scale[0], out_t.zero_point[0]), geom,
                  single_round=r.rounding == "single")


def _run_layer(layer: QLayer, node: Node, x: np.ndarray, config: NpuConfig, backend) -> tuple:
    """One lowered layer on the NPU: channels-last int8 ``x`` in, channels-last result and counters out."""
    batch = len(x)
    model = QuantModel([layer], TensorSpec(node.inputs[0], layer.in_shape, None, "int8", *layer.in_q),
                       TensorSpec(node.output, layer.out_shape, None, "int8", *layer.out_q))
    q = x.reshape(batch, -1) if layer.conv is None else x.transpose(0, 3, 1, 2)
    run = run_model(compile_model(model, config, batch=batch), q.astype(np.int8), backend)
    y = np.asarray(run.values, np.int64).reshape(batch, *layer.out_shape)
    return (y if layer.conv is None else y.transpose(0, 2, 3, 1)), run.counters


def _npu_node(graph: Graph, node: Node, x: np.ndarray, config: NpuConfig, backend) -> tuple:
    """Run one node on the NPU (a depthwise node as one program per group of ``cols`` channels);
    returns (output, summed counters, the lowered layers)."""
    x = np.asarray(x, np.int64)
    if node.op != "depthwise_conv2d":
        layer = lower_node(graph, node)
        y, counters = _run_layer(layer, node, x, config, backend)
        return y.reshape(len(x), *graph.tensors[node.output].shape), counters, [layer]
    channels = x.shape[-1]
    parts, totals, layers = [], None, []
    for c0 in range(0, channels, config.cols):
        group = slice(c0, min(c0 + config.cols, channels))
        layer = lower_node(graph, node, group)
        y, counters = _run_layer(layer, node, x[..., group], config, backend)
        parts.append(y)
        layers.append(layer)
        totals = counters if totals is None else {k: totals[k] + v for k, v in counters.items()}
    return np.concatenate(parts, axis=-1), totals, layers


def _macs(graph: Graph, node: Node) -> int:
    """Useful multiply-accumulates of one sample (depthwise: its own taps only)."""
    out = graph.tensors[node.output].shape
    w = graph.tensors[node.inputs[1]].data.shape if node.op in NPU_OPS else None
    if node.op == "conv2d":
        return int(np.prod(out)) * w[1] * w[2] * w[3]
    if node.op == "depthwise_conv2d":
        return int(np.prod(out)) * w[1] * w[2]
    if node.op == "fully_connected":
        return int(np.prod(w))
    return 0


def run_on_npu(graph: Graph, x, config: NpuConfig, backend="golden", npu_ops=NPU_OPS) -> tuple:
    """Run ``graph`` on the batched int8 input ``x``: nodes in ``npu_ops`` on the NPU (``backend``: a
    driver name or an object with ``run(program)``), the rest on the host kernels. Returns
    ``(outputs, records)``, one JSON-ready record per node."""
    values, records = {graph.inputs[0]: check_graph_input(graph, x)}, []
    batch = len(values[graph.inputs[0]])
    peak = config.rows * config.cols
    for node in graph.nodes:
        macs = _macs(graph, node) * batch
        record = {"index": len(records), "name": node.name, "op": node.op,
                  "output_shape": list(graph.tensors[node.output].shape), "macs": macs}
        if node.op in npu_ops:
            y, counters, layers = _npu_node(graph, node, values[node.inputs[0]], config, backend)
            cycles = counters["cycles"]
            record.update(device="npu", cycles=cycles, utilization=macs / (cycles * peak) if cycles else 0.0,
                          counters=counters,
                          gemms=[[batch * layer.positions, layer.k, layer.n] for layer in layers],
                          array_macs=counters["macs"], energy_fj=counters["energy_fj"],
                          dma_in_bytes=counters["dma_in_bytes"], dma_out_bytes=counters["dma_out_bytes"],
                          programs=len(layers), per_channel=bool(np.ndim(layers[0].multiplier)),
                          single_round=layers[0].single_round)
        else:
            y = run_node(graph, node, values)
            moved = sum(int(np.asarray(values[i]).size) for i in node.inputs if i in values) + int(y.size)
            record.update(device="cpu", host_bytes=moved)
        values[node.output] = y
        records.append(record)
    return [values[name].astype(np.int8) for name in graph.outputs], records
