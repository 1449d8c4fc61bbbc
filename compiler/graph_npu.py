"""Run a graph IR ``Graph`` with its convolutions and fully connected layers on the NPU, the rest on the
host kernels.

Each NPU node is lowered to one ``QLayer`` (``lower_node``) and compiled for the configuration with the
model compiler (``model_program.compile_model``): weights in the array's layout, the input zero point
folded into the bias, per-channel multipliers and shifts (``LOAD_QUANT``) and the rounding the source
format uses (``CONFIG single_round``). Layouts: the graph is channels-last (TFLite), the NPU's conv
layers take (C, H, W), so the host transposes an NPU node's input and output; a convolution reads its
input in place where that moves fewer bytes than im2col rows, else the host builds them (the model
compiler's host glue). A run of convolutions each read by the next alone compiles as one model
(``_chain``), so that their activations stay on chip where the SRAM holds them; so do residual blocks
(a block's input read by its branch and by its ADD, or by a strided 1x1 shortcut). The host traffic is
what the run reports.

Lowerings, all exact against the host kernels (``host_kernels``, TFLite's reference arithmetic):

* ``conv2d``: weights (O, kh, kw, I) -> K x N with K in (channel, kernel row, kernel column) order.
* ``fully_connected``: weights (N, K) -> K x N; the input is flattened channels-last, as TFLite does.
* ``average_pool2d`` whose windows all lie inside the input (one divisor for every position): a
  one-channel convolution with unit weights (K = the window's taps, N = 1) over every (sample, channel)
  pair as its own sample, whose requantization divides by the window size exactly as TFLite does
  (``pool_divisor``: one multiplier, checked against every sum the window can reach). One column of the
  array works; the weights are the window's taps, not a block-diagonal matrix. Pools whose windows
  overlap the padding divide by a count that varies per position: host.
* ``depthwise_conv2d``: a dense convolution with block-diagonal weights (output channel ``c*M + m``
  reads only input channel ``c``): one program whose input is read where it lies
  (``model_program.direct_conv``; the K tiles of other channel groups, all zero, are skipped), or, where
  the input does not fit, cut into groups of ``cols`` input channels (one N tile of outputs each; fewer
  when a group's im2col row would not fit half the activation SRAM), one im2col program per group.
  Exact, but a K tile of a group feeds only its own channels' columns, so utilization is at most
  ``1 / cols`` (6 % on 16x16), which the per-layer report shows. A depthwise mapping that uses the
  array well (row-stationary, or a dedicated lane) is not built yet.

* ``add`` (TFLite's ADD, two operands of one shape): elementwise ACTIVATEs through the tables of each
  input's rescaling (``compiler/elementwise.py``), exact by construction. Its operands come from the
  host and its result goes back (it is not part of a chain yet).

* ``conv2d`` / ``fully_connected`` without requantization (ONNX's MatMulInteger, ConvInteger): a raw
  layer (``QLayer.raw``), whose program ``STORE``s the int32 accumulators; the host adds the bias.
* ``dynamic_matmul`` with constant weights: the host quantizes the input on its run-time grid
  (``host_kernels.dynamic_quantize``), the NPU computes the int32 sums as a raw layer built for that
  grid's zero point (``w - w_zp`` split into int8 parts where it leaves int8), the host casts and scales.

``run_on_npu`` returns the outputs and one record per node (device, cycles, utilization, energy, DMA
bytes, all counters, the GEMMs it ran as [M, K, N]); host nodes report the bytes their inputs and
outputs occupy. Utilization is the node's MACs (its source op's: a depthwise convolution's own taps)
that the array did, per cycle and PE: no more than the array's MAC counter, which leaves out the
all-zero weight tiles the NPU skips (an identity layer's off-diagonal ones).
"""
from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

import numpy as np

from opennpu.config import NpuConfig
from opennpu.golden import numerics
from opennpu.golden.model import COUNTER_BEATS_BYTES

from .graph import Graph, Node
from .host_kernels import check_graph_input, dynamic_output, dynamic_quantize, dynamic_scale, pool_counts, run_node
from .elementwise import run_add
from .model_program import compile_model, direct_conv, grouped_input, one_program, run_model
from .qlayers import ConvGeom, QAdd, QLayer, QuantModel, TensorSpec, int8_parts

__all__ = ["NPU_OPS", "TABLE_OPS", "npu_runs", "pool_divisor", "lower_node", "lowered", "layer_input", "host_bytes",
           "random_graph_input", "run_on_npu"]

#: graph IR ops that are a 256-entry table (``LutAttrs``), which an NPU node's activation unit can apply
TABLE_OPS = frozenset({"lut", "logistic", "tanh"})
#: graph IR ops the NPU runs (``npu_runs`` says which nodes of them)
NPU_OPS = frozenset({"conv2d", "depthwise_conv2d", "fully_connected", "average_pool2d", "matmul", "dynamic_matmul",
                     "add"})


#: (multiplier, shift, out_zp, qmin, qmax) of a raw layer: its CONFIG needs valid values, which nothing reads
_RAW_REQUANT = (1 << 30, 0, 0, -128, 127)


@lru_cache(maxsize=None)
def pool_divisor(count: int) -> tuple[int, int]:
    """``(M0, shift)`` with which the NPU's requantization (``numerics.requantize``, double rounding)
    turns every sum of ``count`` int8 values into TFLite's AVERAGE_POOL_2D result, the sum divided by
    ``count`` and rounded half away from zero. Checked on every sum in [-128 * count, 127 * count];
    candidates are the multipliers next to ``2^(31 - shift) / count`` for shift 0, -1, .., -31."""
    sums = np.arange(-128 * count, 127 * count + 1, dtype=np.int64)
    half = count // 2
    want = np.where(sums > 0, (sums + half) // count, -((half - sums) // count))
    for shift in range(0, -32, -1):
        centre = (1 << (31 - shift)) // count
        for m0 in range(max(0, centre - 2), min(centre + 3, numerics.INT32_MAX + 1)):
            if np.array_equal(numerics.requantize(sums, m0, shift), want):
                return m0, shift
    raise ValueError(f"no requantization multiplier divides sums of {count} int8 values exactly")


def _group_size(node: Node, config: NpuConfig) -> int:
    """Input channels per program of a depthwise node: ``cols`` (one N tile), halved until one im2col
    row of the group (channels x taps) fits half the activation SRAM; 0 if none does (an average pool
    runs one channel at a time: 1 if its taps fit, else 0)."""
    kh, kw = node.attrs.window.kernel
    group = config.cols if node.op == "depthwise_conv2d" else 1
    while group and -(-group * kh * kw // config.rows) > config.act_depth // 2:
        group //= 2
    return group


def _uniform_pool(x_shape: tuple, window) -> bool:
    """Every window of the pool lies inside the input: one divisor for every output position."""
    return bool(np.all(pool_counts((1, *x_shape), window) == window.kernel[0] * window.kernel[1]))


def npu_runs(graph: Graph, node: Node, config: NpuConfig, npu_ops=NPU_OPS) -> bool:
    """Whether ``node`` runs on the NPU: its op is in ``npu_ops``; an average pool's windows all lie
    inside the input; a depthwise or pooling node's im2col row (of one group) fits the activation SRAM.
    A node without requantization (int32 accumulator output: MatMulInteger, ConvInteger) runs too, as a
    raw layer (its accumulators ``STORE``d); a ``dynamic_matmul`` with constant weights runs so too."""
    if node.op not in npu_ops:
        return False
    if node.op == "dynamic_matmul":
        return graph.tensors[node.inputs[1]].is_const
    if node.op == "add":            # (no broadcasting: two operands of the output's shape)
        out = graph.tensors[node.output].shape
        return config.act_depth >= 4 and all(graph.tensors[i].shape == out for i in node.inputs)
    if node.op == "average_pool2d" and not _uniform_pool(graph.tensors[node.inputs[0]].shape, node.attrs.window):
        return False
    return node.op in ("conv2d", "fully_connected", "matmul") or _group_size(node, config) > 0


def _operands(graph: Graph, node: Node) -> tuple:
    """(weights, bias, M0 per channel, shift per channel, input zero point, requant) of a convolution or
    fully connected node (no requantization: ``_RAW_REQUANT``'s multiplier and shift)."""
    n = graph.tensors[node.output].shape[-1]
    a = node.attrs
    r = a.requant
    bias = np.zeros(n, np.int64) if node.inputs[2] is None else np.asarray(graph.tensors[node.inputs[2]].data,
                                                                            np.int64)
    multiplier, shift = _RAW_REQUANT[:2] if r is None else (r.multiplier, r.shift)
    return (np.asarray(graph.tensors[node.inputs[1]].data, np.int64), bias, np.broadcast_to(multiplier, (n,)),
            np.broadcast_to(shift, (n,)), a.in_zp, r)


def _geometry(node: Node, in_chw: tuple, out_shape: tuple) -> ConvGeom:
    win = node.attrs.window
    pads = tuple(max(p, 0) for p in win.pads)   # (negative: rows the last window does not reach)
    geom = ConvGeom(in_chw, win.kernel, win.stride, pads, win.dilation, 1)
    if geom.out_hw != tuple(out_shape[:2]):
        raise ValueError(f"node {node.name!r}: output {out_shape[:2]} but the window gives {geom.out_hw}")
    return geom


def _lower_pool(graph: Graph, node: Node) -> QLayer:
    """An average pool, one channel of one sample: unit weights over the window, no zero points (TFLite
    pools the raw int8 values), ``pool_divisor`` as the requantization, the fused clamp."""
    x_t, out_t = graph.tensors[node.inputs[0]], graph.tensors[node.output]
    a = node.attrs
    h, wd, _ = x_t.shape
    if not _uniform_pool(x_t.shape, a.window):
        raise ValueError(f"node {node.name!r}: its pooling windows overlap the padding (a count per "
                         f"position), which the NPU cannot divide by; run it on the host")
    taps = a.window.kernel[0] * a.window.kernel[1]
    m0, shift = pool_divisor(taps)
    return QLayer(node.name, node.op, np.ones((taps, 1), np.int64), np.zeros(1, np.int64), m0, shift, 0, a.qmin,
                  a.qmax, None, (1, h, wd), (x_t.scale[0], 0), (out_t.scale[0], out_t.zero_point[0]),
                  _geometry(node, (1, h, wd), out_t.shape))


def _dense_depthwise(w: np.ndarray, channels: int) -> np.ndarray:
    """Depthwise weights (1, kh, kw, I*M) -> dense conv weights (I*M, kh, kw, I), block-diagonal."""
    _, kh, kw, out = w.shape
    dense = np.zeros((out, kh, kw, channels), np.int64)
    for o in range(out):
        dense[o, :, :, o // (out // channels)] = w[0, :, :, o]
    return dense


def lower_node(graph: Graph, node: Node, channels: slice = slice(None)) -> QLayer:
    """One NPU node -> a ``QLayer`` (conv layers take and give (C, H, W); FC layers flat vectors).
    ``channels``: a depthwise node's input channels (and their output channels) to lower. An average
    pool lowers to a one-channel layer that ``_npu_node`` runs on every (sample, channel) pair."""
    if node.op not in NPU_OPS:
        raise ValueError(f"node {node.name!r}: {node.op} has no NPU lowering (NPU ops: {sorted(NPU_OPS)})")
    if node.op == "average_pool2d":
        return _lower_pool(graph, node)
    if node.op == "matmul":
        raise ValueError(f"node {node.name!r}: a matmul of two activations lowers one slice of its second "
                         f"operand at a time (``_product_layer``), not as one layer")
    if node.op == "dynamic_matmul":
        raise ValueError(f"node {node.name!r}: a dynamic_matmul lowers for its run-time input grid "
                         f"(``_dynamic_layer``), not as one layer")
    x_t, out_t = graph.tensors[node.inputs[0]], graph.tensors[node.output]
    w, bias, multiplier, shift, in_zp, r = _operands(graph, node)
    n = out_t.shape[-1]
    if node.op == "depthwise_conv2d":                    # output channels c*M .. c*M+M-1 of the chosen inputs
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
        geom = _geometry(node, (c, h, wd), out_t.shape)
        matrix, in_shape = w.transpose(3, 1, 2, 0).reshape(-1, w.shape[0]), (c, h, wd)
    # The NPU multiplies plain int8 activations: fold the input zero point into the bias (int32 ring).
    folded = numerics.wrap_int32(bias - in_zp * matrix.sum(axis=0))
    if r is None:                               # int32 sums out (MatMulInteger / ConvInteger): a raw layer
        return QLayer(node.name, node.op, matrix, folded, *_RAW_REQUANT, None, in_shape, (x_t.scale[0], in_zp),
                      (1.0, 0), geom, raw=True)
    if len(r.multiplier) > 1:
        multiplier, shift = np.asarray(multiplier, np.int64), np.asarray(shift, np.int64)
    else:
        multiplier, shift = int(r.multiplier[0]), int(r.shift[0])
    return QLayer(node.name, node.op, matrix, folded, multiplier, shift, r.out_zp, r.qmin, r.qmax, None,
                  in_shape, (x_t.scale[0], in_zp), (out_t.scale[0], out_t.zero_point[0]), geom,
                  single_round=r.rounding == "single")


def _dynamic_layer(graph: Graph, node: Node, scale: float, zp: int) -> QLayer:
    """A ``dynamic_matmul`` with constant weights for one run: the int32 sums ``(q - zp) @ (w - w_zp)`` of
    its input quantized on the run's grid (``host_kernels.dynamic_quantize``: uint8 values, here shifted
    onto int8, so ``in_q`` is (``scale``, ``zp``)) as a raw fully connected layer, ``w - w_zp`` (up to
    -255..255) split into int8 parts stacked along K and the input fed once per part (``_product_rows``)."""
    w_t = graph.tensors[node.inputs[1]]
    b = np.asarray(w_t.data, np.int64) - np.asarray(w_t.zero_point, np.int64)
    matrix = np.concatenate(int8_parts(b))
    return QLayer(node.name, "fully_connected", matrix, numerics.wrap_int32(-zp * matrix.sum(axis=0)), *_RAW_REQUANT,
                  None, (len(matrix),), (scale, zp), (1.0, 0), raw=True)


def _product_layer(graph: Graph, node: Node, b: np.ndarray) -> QLayer:
    """One (K, N) slice ``b`` of a ``matmul``'s second operand as the weights of a fully connected layer
    whose samples are the rows of the first operand. ``b - zp_b`` spans up to -255..255: where it leaves
    int8 it is split into int8 parts stacked along K (``qlayers.int8_parts``: 2, or 3 where 255 occurs),
    and the rows are fed as many times (``_product_rows``), so the products stay exact."""
    (za, zb), r = node.attrs.in_zp, node.attrs.requant
    matrix = np.concatenate(int8_parts(np.asarray(b, np.int64) - zb))
    a_t, out_t = graph.tensors[node.inputs[0]], graph.tensors[node.output]
    return QLayer(node.name, node.op, matrix, numerics.wrap_int32(-za * matrix.sum(axis=0)), int(r.multiplier[0]),
                  int(r.shift[0]), r.out_zp, r.qmin, r.qmax, None, (len(matrix),), (a_t.scale[0], za),
                  (out_t.scale[0], out_t.zero_point[0]))


def _product_rows(layer: QLayer, a: np.ndarray) -> np.ndarray:
    """The rows (M, K) of a ``matmul``'s first operand as ``_product_layer``'s samples (fed once per part
    of its split weights)."""
    return np.concatenate([a] * (layer.k // a.shape[-1]), axis=-1)


def layer_input(layer: QLayer, x: np.ndarray) -> np.ndarray:
    """A lowered layer's batched channels-last input in the layout the layer takes: flat vectors, or
    (C, H, W) for a convolution."""
    return x.reshape(len(x), -1) if layer.conv is None else x.transpose(0, 3, 1, 2)


def host_bytes(node: Node, values: dict, y: np.ndarray) -> int:
    """The bytes a host node moves: its activation inputs and its output (one byte per int8 value, four
    per float32 value)."""
    def size(a):
        a = np.asarray(a)
        return int(a.size) * (4 if a.dtype == np.float32 else 1)
    return sum(size(values[i]) for i in node.inputs if i in values) + size(y)


def _run_layer(layer: QLayer, node: Node, x: np.ndarray, config: NpuConfig, backend) -> tuple:
    """One lowered layer on the NPU: channels-last int8 ``x`` in, channels-last result and counters out."""
    batch = len(x)
    model = QuantModel([layer], TensorSpec(node.inputs[0], layer.in_shape, None, "int8", *layer.in_q),
                       TensorSpec(node.output, layer.out_shape, None, "int8", *layer.out_q))
    run = run_model(compile_model(model, config, batch=batch), layer_input(layer, x).astype(np.int8), backend)
    y = np.asarray(run.values, np.int64).reshape(batch, *layer.out_shape)
    return (y if layer.conv is None else y.transpose(0, 2, 3, 1)), run.counters


def lowered(graph: Graph, node: Node, values: dict, config: NpuConfig) -> list:
    """The layers an NPU node runs as, each with its batched channels-last int8 input (one program each):
    a depthwise node one (its input read in place) or one per group of channels, an average pool one over every (sample, channel) pair as
    its own sample, a product of activations one per slice of its second operand (which goes to the NPU
    as weights: a round trip through the host, which the DMA bytes show), any other node one."""
    if node.op == "dynamic_matmul":
        q, scale, zp = dynamic_quantize(values[node.inputs[0]])
        layer = _dynamic_layer(graph, node, scale, zp - 128)
        rows = (q - 128).reshape(-1, q.shape[-1])
        return [(layer, _product_rows(layer, rows))]
    x = np.asarray(values[node.inputs[0]], np.int64)
    if node.op == "matmul":
        b = np.asarray(values[node.inputs[1]], np.int64)
        layers = [_product_layer(graph, node, weights) for weights in b.reshape(-1, *b.shape[-2:])]
        return [(layer, _product_rows(layer, rows)) for layer, rows in zip(layers, x.reshape(-1, *x.shape[-2:]))]
    if node.op == "average_pool2d":
        b, h, w, c = x.shape
        return [(lower_node(graph, node), x.transpose(0, 3, 1, 2).reshape(b * c, h, w, 1))]
    if node.op != "depthwise_conv2d":
        return [(lower_node(graph, node), x)]
    whole = lower_node(graph, node)
    if direct_conv(whole, config):           # one program, its all-zero weight tiles skipped
        return [(whole, x)]
    size = _group_size(node, config)
    return [(lower_node(graph, node, slice(c0, c0 + size)), x[..., c0:c0 + size]) for c0 in range(0, x.shape[-1], size)]


def _assemble(graph: Graph, node: Node, x_shape: tuple, parts: list) -> np.ndarray:
    """The node's batched output from the outputs of its ``lowered`` layers."""
    out = graph.tensors[node.output].shape
    if node.op == "matmul":
        return np.stack(parts).reshape(*x_shape[:-1], parts[0].shape[-1])
    if node.op == "dynamic_matmul":
        return parts[0].reshape(*x_shape[:-1], parts[0].shape[-1])
    if node.op == "average_pool2d":
        return parts[0].reshape(x_shape[0], x_shape[-1], *out[:2]).transpose(0, 2, 3, 1)
    if node.op == "depthwise_conv2d":
        return np.concatenate(parts, axis=-1)
    return parts[0].reshape(x_shape[0], *out)


def _npu_node(graph: Graph, node: Node, values: dict, config: NpuConfig, backend, table=None) -> tuple:
    """Run one node on the NPU, its ``lowered`` layers one program each, ``table`` (a ``lut`` node's, or
    None) applied by their activation units after the clamp; returns (output, summed counters, the
    lowered layers, the GEMMs run as [M, K, N])."""
    pairs = lowered(graph, node, values, config)
    if table is not None:
        table = np.asarray(table, np.int64)
        pairs = [(replace(layer, lut=table if layer.lut is None else table[layer.lut + 128]), x) for layer, x in pairs]
    parts, totals = [], None
    for layer, x in pairs:
        y, counters = _run_layer(layer, node, x, config, backend)
        parts.append(y)
        totals = counters if totals is None else {k: totals[k] + v for k, v in counters.items()}
    y = _assemble(graph, node, np.shape(values[node.inputs[0]]), parts)
    if node.op == "dynamic_matmul":          # the float32 epilogue on the host: Cast, Mul by the scales
        y = dynamic_output(y, dynamic_scale(pairs[0][0].in_q[0], graph.tensors[node.inputs[1]]))
    return y, totals, [layer for layer, _ in pairs], [[len(x) * layer.positions, layer.k, layer.n] for layer, x in pairs]


def _macs(graph: Graph, node: Node, config: NpuConfig) -> int:
    """Useful multiply-accumulates of one sample (depthwise: its own taps only; an average pool on the
    NPU: one per tap, the additions the array does)."""
    out = graph.tensors[node.output].shape
    if node.op in ("matmul", "dynamic_matmul"):
        return int(np.prod(out)) * graph.tensors[node.inputs[0]].shape[-1]
    if node.op == "average_pool2d":
        return int(np.prod(out)) * int(np.prod(node.attrs.window.kernel)) if npu_runs(graph, node, config) else 0
    if node.op not in ("conv2d", "depthwise_conv2d", "fully_connected"):
        return 0
    w = graph.tensors[node.inputs[1]].data.shape
    if node.op == "conv2d":
        return int(np.prod(out)) * w[1] * w[2] * w[3]
    if node.op == "depthwise_conv2d":
        return int(np.prod(out)) * w[1] * w[2]
    return int(np.prod(w))                  # (fully connected)


def _table_after(graph: Graph, node: Node) -> Node | None:
    """The table node (``lut``, TFLite's ``logistic`` / ``tanh``) that alone reads ``node``'s output (which
    is no graph output), else None: its table can run in the activation unit of the node's programs
    (exact: the unit applies it after the same clamp)."""
    readers = [n for n in graph.nodes if node.output in n.inputs]
    if len(readers) == 1 and readers[0].op in TABLE_OPS and node.output not in graph.outputs:
        return readers[0]
    return None


def random_graph_input(graph: Graph, batch: int, seed: int = 0) -> np.ndarray:
    """A batch of random inputs for ``graph``: int8 values, or standard-normal float32 ones for a float32
    input (a dynamically quantized graph)."""
    spec, rng = graph.tensors[graph.inputs[0]], np.random.default_rng(seed)
    if spec.dtype == "float32":
        return rng.standard_normal((batch, *spec.shape)).astype(np.float32)
    return rng.integers(-128, 128, (batch, *spec.shape), dtype=np.int8)


def _chain_link(graph: Graph, node: Node, config: NpuConfig, npu_ops) -> tuple | None:
    """``(layer, activation inputs)`` of ``node`` if it may be part of a chain run as one model, else None: a
    convolution (a depthwise one that lowers whole) that the NPU runs, with requantization (no raw int32
    output), or an ADD of two activations (``QAdd``) that it runs, whose channels fill whole groups of
    ``min(rows, cols)`` lanes (on chip its ACT unit reads two words a row; half-empty words would make
    it slower than the host bus's densely packed operands); no table after either."""
    if not npu_runs(graph, node, config, npu_ops) or _table_after(graph, node) is not None:
        return None
    if node.op == "add":          # (on chip it reads whole channel groups, two words a row: only full ones)
        out = graph.tensors[node.output]
        if any(graph.tensors[i].is_const for i in node.inputs) or len(out.shape) != 3 \
                or out.shape[-1] % min(config.rows, config.cols):
            return None
        h, w, c = out.shape
        return QAdd(node.name, node.attrs, (c, h, w), (None, None), (out.scale[0], out.zero_point[0])), \
            tuple(node.inputs)
    if node.op not in ("conv2d", "depthwise_conv2d"):
        return None
    layer = lower_node(graph, node)
    if layer.raw or (node.op == "depthwise_conv2d" and not direct_conv(layer, config)):
        return None
    return layer, (node.inputs[0],)


def _linked(graph: Graph, members: list) -> list | None:
    """``members`` (``(node, layer, activation inputs)``, in graph order) as a chain ``[(node, layer)]`` whose
    layers name their sources, or None if the output of a member but the last leaves it (a graph output,
    or read by a node outside)."""
    names = {node.name for node, _, _ in members}
    index = {node.output: k for k, (node, _, _) in enumerate(members)}
    x = members[0][0].inputs[0]
    chain = []
    for k, (node, layer, acts) in enumerate(members):
        if k < len(members) - 1 and (node.output in graph.outputs or any(
                n.name not in names for n in graph.nodes if node.output in n.inputs)):
            return None
        srcs = tuple(None if src == k - 1 else src for src in (-1 if a == x else index[a] for a in acts))
        if k and isinstance(layer, QAdd):
            layer = replace(layer, sources=srcs)
        elif k:
            layer = replace(layer, source=srcs[0])
        chain.append((node, layer))
    return chain


def _chain_model(chain: list) -> QuantModel:
    """A chain ``[(node, layer)]`` as one ``QuantModel`` (channels-first int8 tensors)."""
    first, last = chain[0][1], chain[-1][1]
    return QuantModel([layer for _, layer in chain],
                      TensorSpec(chain[0][0].inputs[0], first.in_shape, None, "int8", *first.in_q),
                      TensorSpec(chain[-1][0].output, last.out_shape, None, "int8", *last.out_q))


def _chain(graph: Graph, start: int, config: NpuConfig, npu_ops, batch: int) -> list:
    """``[(node, layer)]``: the nodes from ``graph.nodes[start]`` that compile as one model, so that their
    outputs may stay on chip (``model_program``: a convolution or ADD reads its sources in place): a
    convolution first, then convolutions and ADDs (``_chain_link``) reading the chain's input or an
    earlier member's output (a residual block: its input read by the branch and by the ADD), every
    output but the last read inside it alone and no graph output; the longest such run, that if its
    layers read more than the layer before also compiles to one program for ``batch``."""
    members, made = [], set()
    x = graph.nodes[start].inputs[0]
    for node in graph.nodes[start:]:
        link = _chain_link(graph, node, config, npu_ops)
        if link is None or (not members and isinstance(link[0], QAdd)) \
                or any(a != x and a not in made for a in link[1]):
            break
        members.append((node, *link))
        made.add(node.output)
    for end in range(len(members), 1, -1):
        chain = _linked(graph, members[:end])
        if chain is not None:
            model = _chain_model(chain)
            if not model.is_graph or (grouped_input(model.layers[0], config) and one_program(model, config, batch)):
                return chain
    return [(node, layer) for node, layer, _ in members[:1]]


def _run_chain(chain: list, x: np.ndarray, config: NpuConfig, backend) -> tuple:
    """A chain (``_chain``) as one model (profiled: counters per layer, the tail after the last snapshot
    counted with the last layer): channels-last int8 ``x`` in; ``(output, per-layer counters, compiled
    model)`` out."""
    model = _chain_model(chain)
    first, last = model.layers[0], model.layers[-1]
    compiled = compile_model(model, config, batch=len(x), profile=True)
    run = run_model(compiled, layer_input(first, x).astype(np.int8), backend)
    per = [dict(c) for c in run.layer_counters]
    for name, total in run.counters.items():
        per[-1][name] = total - sum(c[name] for c in per[:-1])
    # (``run_model`` takes each snapshot's own push out of the layer after it; the rest of the total, given
    # to the last layer, holds all of them: they are the profile's, not the layer's)
    pushed = len(per) * config.beats(COUNTER_BEATS_BYTES) * config.bus_bytes
    per[-1]["dma_out_bytes"] -= pushed
    per[-1]["energy_fj"] -= pushed * config.energy.dma_byte_fj
    y = np.asarray(run.values, np.int64).reshape(len(x), *last.out_shape).transpose(0, 2, 3, 1)
    return y, per, compiled


def run_on_npu(graph: Graph, x, config: NpuConfig, backend="golden", npu_ops=NPU_OPS) -> tuple:
    """Run ``graph`` on the batched int8 input ``x``: nodes in ``npu_ops`` on the NPU (``backend``: a
    driver name or an object with ``run(program)``), a table (``TABLE_OPS``) that alone reads an NPU
    node's output in that node's activation units, the rest on the host kernels; a run of convolutions
    and ADDs (``_chain``: each output read inside the run alone, residual blocks included) compiles as
    one model, whose outputs stay on chip where the activation SRAM holds them. Returns ``(outputs,
    records)``, one JSON-ready record per node (a fused table's: device ``npu``, ``fused_into`` the node,
    no cycles of its own; an NPU node's ``input`` and ``output``: ``host`` or ``chip``)."""
    values, records = {graph.inputs[0]: check_graph_input(graph, x)}, []
    batch = len(values[graph.inputs[0]])
    peak = config.rows * config.cols
    fused = {}                                  # table node name -> (the NPU node that ran it, its counters)
    chained = {}                                # node name -> (counters, layer, its LayerInfo, programs)
    for i, node in enumerate(graph.nodes):
        macs = _macs(graph, node, config) * batch
        record = {"index": len(records), "name": node.name, "op": node.op,
                  "output_shape": list(graph.tensors[node.output].shape), "macs": macs}
        if node.name in fused:
            producer, counters = fused[node.name]
            record.update(device="npu", fused_into=producer, cycles=0, utilization=0.0,
                          counters={k: 0 for k in counters},
                          gemms=[], array_macs=0, energy_fj=0, dma_in_bytes=0, dma_out_bytes=0, programs=0)
            records.append(record)
            continue
        target = node.output
        chain = [] if node.name in chained else _chain(graph, i, config, npu_ops, batch)
        if len(chain) > 1:
            y, per, compiled = _run_chain(chain, values[node.inputs[0]], config, backend)
            for k, ((member, layer), counters, info) in enumerate(zip(chain, per, compiled.layers)):
                chained[member.name] = (counters, layer, info, compiled.stages if k == 0 else 0)
            values[chain[-1][0].output] = y
        if node.name in chained:                # (its output: on chip, or set by the chain's run)
            counters, layer, info, programs = chained[node.name]
            layers, gemms = ([], []) if isinstance(layer, QAdd) else ([layer], [[batch * layer.positions, layer.k,
                                                                                   layer.n]])
            io = (info.input, info.output)
        elif node.op == "add" and npu_runs(graph, node, config, npu_ops):
            a, b = (values[i] if i in values                    # (a constant operand: the same for every sample)
                    else np.broadcast_to(graph.tensors[i].data, (batch, *graph.tensors[i].shape)) for i in node.inputs)
            y, counters = run_add(node.attrs, a, b, config, backend)
            layers, gemms, programs, io = [], [], 1, ("host", "host")
            values[target] = y
        elif npu_runs(graph, node, config, npu_ops):
            table = _table_after(graph, node)
            y, counters, layers, gemms = _npu_node(graph, node, values, config, backend,
                                                   None if table is None else table.attrs.table)
            if table is not None:               # y is the table's output; the node's own is read by nobody else
                fused[table.name] = (node.name, counters)
                target = table.output
            programs, io = len(layers), ("host", "host")
            values[target] = y
        else:
            y = run_node(graph, node, values)
            record.update(device="cpu", host_bytes=host_bytes(node, values, y))
            values[target] = y
            records.append(record)
            continue
        cycles = counters["cycles"]
        done = min(macs, counters["macs"])      # (an all-zero weight tile the NPU skipped did no useful work)
        record.update(device="npu", cycles=cycles, utilization=done / (cycles * peak) if cycles else 0.0,
                      counters=counters,
                      gemms=gemms,
                      array_macs=counters["macs"], energy_fj=counters["energy_fj"],
                      dma_in_bytes=counters["dma_in_bytes"], dma_out_bytes=counters["dma_out_bytes"],
                      programs=programs, per_channel=bool(layers and np.ndim(layers[0].multiplier)),
                      single_round=bool(layers and layers[0].single_round), input=io[0], output=io[1])
        records.append(record)
    return [values[name].astype(graph.tensors[name].dtype) for name in graph.outputs], records
