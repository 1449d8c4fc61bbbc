"""Graph IR: a DAG of quantized tensors and integer ops, independent of the source format.

A ``Graph`` holds named ``QTensor``s and a topologically ordered list of ``Node``s. Every node reads
tensors by name and writes one output tensor. The IR carries the *integer* semantics of each op: the
importer of a format (``tflite_import``, ``onnx_import``) derives the multipliers, shifts, offsets and clamps with that
format's own rounding rules, so that a backend (the host kernels, the NPU: ``graph_npu``) only does integer work.

Conventions
-----------
* Activations are int8 with a per-tensor (scale, zero point) (one exception: the input of a graph
  without nodes, an ONNX model that is one QuantizeLinear/DequantizeLinear, may be per axis), int32
  accumulators (below), or float32 (no grid: the tensors between ONNX's dynamic quantizations, whose
  grids are computed from the values at run time, and the float head or tail of a model whose first or
  last LayerNormalization is not quantized; only the ``dynamic_matmul``, ``float_*``, ``quantize`` and
  layout ops read them). Their ``shape`` is per sample: the batch
  axis is left out, and any batch size runs. Image tensors are channels-last (H, W, C), as in TFLite.
* Constants carry ``data`` (their full array). Weights are symmetric int8 (zero point 0) with
  per-tensor or per-channel scales (``axis`` names the channel axis); biases are int32 on the grid ``s_in * s_w``.
* Weight layouts: ``conv2d`` (O, kh, kw, I); ``depthwise_conv2d`` (1, kh, kw, I * M), output channel
  ``c * M + m`` reads input channel ``c``; ``fully_connected`` (N, K).

Ops (``Node.op``) and their ``attrs``
-------------------------------------
* ``conv2d``, ``depthwise_conv2d``: ``ConvAttrs``; inputs (x, weights, bias or ``None``).
* ``fully_connected``: ``FullyConnectedAttrs``; inputs (x, weights, bias or ``None``); x is flattened per
  sample to K values.
* A convolution or fully connected node whose ``requant`` is ``None`` writes its int32 accumulators
  (``x - in_zp`` times the weights, plus the bias) to an int32 tensor (ONNX's ``MatMulInteger`` /
  ``ConvInteger``; on the NPU a raw layer, ``qlayers.QLayer.raw``); only layout ops (``reshape``,
  ``transpose``) may read such a tensor.
* ``add``: ``AddAttrs``; inputs (a, b), b an activation or an int8 constant (full shape), numpy
  broadcasting against the batched shapes.
* ``average_pool2d``, ``max_pool2d``: ``PoolAttrs``; input x; the window excludes padding.
* ``reshape``: no attrs (the output tensor's shape says it all); the flat order is unchanged.
* ``softmax``: ``SoftmaxAttrs``; over the last axis.
* ``lut``: ``LutAttrs``; elementwise int8 -> int8 table (a unary function, or a change of grid, that a
  source format computes in float between a dequantize and a quantize: ONNX).
* ``transpose``: ``TransposeAttrs``; a permutation of the per-sample axes.
* ``matmul``: ``MatMulAttrs``; inputs (a, b), two activations (..., M, K) and (..., K, N) with the same
  leading axes: ``requant((a - zp_a) @ (b - zp_b))`` (attention's Q·Kᵀ and attention·V).
* ``float_softmax``: ``FloatSoftmaxAttrs``; softmax over the last axis in float32 as ONNX defines it
  (dequantize, exp of the differences to the row max, normalize, quantize half to even). Host only.
* ``layer_norm``: ``LayerNormAttrs``; over the last axis, in float32 as ONNX defines it (no integer form
  exists): dequantize, normalize, scale and shift, quantize (round half to even). Host only.
* ``pad``: ``PadAttrs``; input x; values copied unchanged, the border filled with one int8 value.
* ``mean``: ``MeanAttrs``; input x; over per-sample axes, integer arithmetic only.
* ``concatenation``: ``ConcatAttrs``; inputs (x1, x2, ...), activations on one shared grid.
* ``mul``: ``MulAttrs``; inputs (a, b), b an activation or an int8 constant, numpy broadcasting as for ``add``.
* ``logistic``, ``tanh``: ``LutAttrs``; input x; a 256-entry table from input to output values.
* ``dynamic_matmul``: no attrs; inputs (a, b), a a float32 activation (..., M, K), b a float32 activation
  (..., K, N) with the same leading axes or an int8/uint8 constant (K, N) with its own scale and zero
  point (per tensor, or per column: ``axis`` 1). ONNX's DynamicQuantizeLinear of each activation (uint8,
  its grid from the whole batched tensor's min and max), MatMulInteger (int32 sums of the operands less
  their zero points), Cast to float32, Mul by the float32 product of the two scales. With constant
  weights the NPU computes the int32 sums (``graph_npu``), the host the grids and the float32 epilogue.
* ``float_add``: no attrs; inputs (a, b), float32, b an activation or a float32 constant, numpy
  broadcasting against the batched shapes. ``float_clip``: ``FloatClipAttrs``; a float32 clamp.
  ``float_layer_norm``: ``FloatLayerNormAttrs``; ``layer_norm`` without its dequantize and quantize.
  ``quantize``: float32 -> int8 on the output tensor's grid (ONNX QuantizeLinear); ``dequantize``: int8 ->
  float32 on the input's grid (a float tail after the last quantized tensor). Host only.

A chain of ``conv2d`` / ``fully_connected`` nodes is also a ``qlayers.QuantModel`` (``onnx_import.import_onnx``
builds that view, which the model compiler fuses on chip): each node lowers to a ``QLayer``
(``graph_npu.lower_node``), the input zero point folded into the bias there.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["QTensor", "Window", "Requant", "ConvAttrs", "FullyConnectedAttrs", "AddAttrs", "PoolAttrs",
           "SoftmaxAttrs", "Node", "Graph", "OPS", "PadAttrs", "MeanAttrs", "ConcatAttrs", "MulAttrs", "LutAttrs",
           "TransposeAttrs", "MatMulAttrs", "LayerNormAttrs",
           "FloatSoftmaxAttrs", "FloatClipAttrs", "FloatLayerNormAttrs"]


@dataclass(frozen=True)
class QTensor:
    """A tensor: per-sample ``shape`` for activations (full shape for constants), ``dtype`` ("int8",
    "int32"), quantization ``scale`` / ``zero_point`` (tuples: one entry per tensor, or one per channel
    along ``axis``) and, for constants, ``data``."""
    name: str
    shape: tuple
    dtype: str
    scale: tuple
    zero_point: tuple
    axis: int | None = None
    data: np.ndarray | None = None

    @property
    def is_const(self) -> bool:
        return self.data is not None


@dataclass(frozen=True)
class Window:
    """A 2-D sliding window over (H, W): kernel (kh, kw), stride, dilation, pads (top, left, bottom,
    right). A negative bottom/right pad means rows/columns the last window does not reach."""
    kernel: tuple
    stride: tuple
    dilation: tuple
    pads: tuple

    def out_hw(self, h: int, w: int) -> tuple:
        """Output positions (Ho, Wo) for an (h, w) input."""
        (kh, kw), (sh, sw), (dh, dw), (pt, pl, pb, pr) = self.kernel, self.stride, self.dilation, self.pads
        return ((h + pt + pb - dh * (kh - 1) - 1) // sh + 1, (w + pl + pr - dw * (kw - 1) - 1) // sw + 1)


@dataclass(frozen=True)
class Requant:
    """int32 accumulator -> int8: per output channel ``MultiplyByQuantizedMultiplier(acc, M0[c],
    shift[c])`` (one entry: all channels), then ``+ out_zp`` and clamp to [qmin, qmax] (fused ReLU/ReLU6).

    ``rounding``: ``"double"`` is gemmlowp's (a rounding doubling high multiply, then a rounding shift;
    the NPU's ``numerics.requantize``), ``"single"`` one rounding of the exact product,
    ``(acc * M0 + 2^(30 - shift)) >> (31 - shift)``. Which one a source format uses is the importer's
    finding (LiteRT's reference FULLY_CONNECTED rounds once, its CONV_2D twice)."""
    multiplier: tuple
    shift: tuple
    out_zp: int
    qmin: int
    qmax: int
    rounding: str = "double"

    def __post_init__(self):
        if self.rounding not in ("double", "single"):
            raise ValueError(f"rounding must be 'double' or 'single', got {self.rounding!r}")


@dataclass(frozen=True)
class ConvAttrs:
    """Convolution: window geometry, input zero point (padding reads it, so padded taps add zero),
    requantization (``None``: the output is the int32 accumulator)."""
    window: Window
    in_zp: int
    requant: Requant | None


@dataclass(frozen=True)
class FullyConnectedAttrs:
    """``y = requant((x - in_zp) @ W^T + bias)`` (weights symmetric; ``requant`` ``None``: y is the int32
    accumulator)."""
    in_zp: int
    requant: Requant | None


@dataclass(frozen=True)
class AddAttrs:
    """TFLite's int8 ADD: each input ``(q - zp) << left_shift`` scaled by its own (M0, shift <= 0), the
    sum scaled by the output (M0, shift), plus the output zero point, clamped to [qmin, qmax]."""
    in_zp: tuple
    in_multiplier: tuple
    in_shift: tuple
    left_shift: int
    out_multiplier: int
    out_shift: int
    out_zp: int
    qmin: int
    qmax: int


@dataclass(frozen=True)
class PoolAttrs:
    """Pooling window (no dilation) and the clamp of the fused activation; input and output share
    one grid."""
    window: Window
    qmin: int
    qmax: int


@dataclass(frozen=True)
class SoftmaxAttrs:
    """TFLite's int8 softmax (gemmlowp fixed point): differences to the row max at least ``diff_min``
    are scaled by ``input_multiplier << input_left_shift`` into Q5.26; the output grid is 1/256, -128."""
    input_multiplier: int
    input_left_shift: int
    diff_min: int


@dataclass(frozen=True)
class PadAttrs:
    """Padding: one (before, after) pair of non-negative counts per per-sample axis; the padded
    positions hold ``value``, the others the input's values unchanged (no requantization)."""
    pads: tuple
    value: int


@dataclass(frozen=True)
class MeanAttrs:
    """TFLite's int8 MEAN (``QuantizedMeanOrSum``): over the per-sample ``axes`` (sorted; the batch is
    never reduced) the sum of ``q - in_zp`` over the n reduced values, ``MultiplyByQuantizedMultiplier``
    with (multiplier, shift), which hold s_in / s_out with 1/n folded in, plus ``out_zp``, clamped to
    int8. ``keep_dims``: reduced axes stay as size 1."""
    axes: tuple
    keep_dims: bool
    in_zp: int
    multiplier: int
    shift: int
    out_zp: int


@dataclass(frozen=True)
class ConcatAttrs:
    """Concatenation along the per-sample ``axis`` (0 is the first axis after the batch)."""
    axis: int


@dataclass(frozen=True)
class MulAttrs:
    """TFLite's int8 MUL: ``(a - zp_a) * (b - zp_b)`` scaled by (multiplier, shift) (s_a * s_b / s_out),
    plus the output zero point, clamped to [qmin, qmax]."""
    in_zp: tuple
    multiplier: int
    shift: int
    out_zp: int
    qmin: int
    qmax: int


@dataclass(frozen=True)
class LutAttrs:
    """An elementwise int8 function as a table: output ``table[q + 128]`` for input value q."""
    table: tuple

    def __post_init__(self):
        if len(self.table) != 256 or min(self.table) < -128 or max(self.table) > 127:
            raise ValueError(f"a LUT has 256 int8 entries, got {len(self.table)} in {min(self.table)}..{max(self.table)}")


@dataclass(frozen=True)
class TransposeAttrs:
    """``perm``: the per-sample axes in their new order (numpy ``transpose`` without the batch axis)."""
    perm: tuple


@dataclass(frozen=True)
class MatMulAttrs:
    """Product of two activations: their zero points (a, b) and the requantization of the int32 sums."""
    in_zp: tuple
    requant: Requant


@dataclass(frozen=True)
class LayerNormAttrs:
    """Input grid (scale, zero point), per-feature ``gamma`` and ``beta`` (floats), ``epsilon``, output grid."""
    in_q: tuple
    gamma: tuple
    beta: tuple
    epsilon: float
    out_q: tuple


@dataclass(frozen=True)
class FloatSoftmaxAttrs:
    """Input and output grids (scale, zero point)."""
    in_q: tuple
    out_q: tuple


@dataclass(frozen=True)
class FloatLayerNormAttrs:
    """Per-feature ``gamma`` and ``beta`` (floats) and ``epsilon`` of a float32 LayerNormalization."""
    gamma: tuple
    beta: tuple
    epsilon: float


@dataclass(frozen=True)
class FloatClipAttrs:
    """Bounds of a float32 clamp (``Relu``: 0 and infinity)."""
    lo: float
    hi: float


#: op name -> attrs type (``None``: no attrs)
OPS = {"conv2d": ConvAttrs, "depthwise_conv2d": ConvAttrs, "fully_connected": FullyConnectedAttrs,
       "add": AddAttrs, "average_pool2d": PoolAttrs, "max_pool2d": PoolAttrs, "reshape": type(None),
       "softmax": SoftmaxAttrs, "pad": PadAttrs, "mean": MeanAttrs, "concatenation": ConcatAttrs, "mul": MulAttrs,
       "logistic": LutAttrs, "tanh": LutAttrs, "lut": LutAttrs, "transpose": TransposeAttrs,
       "matmul": MatMulAttrs, "layer_norm": LayerNormAttrs,
       "float_softmax": FloatSoftmaxAttrs, "dynamic_matmul": type(None), "float_add": type(None),
       "float_clip": FloatClipAttrs, "float_layer_norm": FloatLayerNormAttrs, "quantize": type(None),
       "dequantize": type(None)}


@dataclass(frozen=True)
class Node:
    """One op: ``inputs`` are tensor names (``None`` for an absent optional input), ``output`` one name."""
    op: str
    name: str
    inputs: tuple
    output: str
    attrs: object = None


@dataclass
class Graph:
    """Tensors by name, nodes in topological order, graph input and output names. Construction checks
    that the ops are known, every node reads only tensors that exist by then, and every tensor is
    written at most once; ``ValueError`` otherwise."""
    tensors: dict
    nodes: list
    inputs: tuple
    outputs: tuple

    def __post_init__(self):
        ready = {name for name, t in self.tensors.items() if t.is_const} | set(self.inputs)
        missing = [n for n in (*self.inputs, *self.outputs) if n not in self.tensors]
        if missing:
            raise ValueError(f"graph inputs/outputs {missing} are not tensors of the graph")
        for node in self.nodes:
            if node.op not in OPS:
                raise ValueError(f"node {node.name!r}: unknown op {node.op!r}; known: {', '.join(OPS)}")
            if not isinstance(node.attrs, OPS[node.op]):
                raise ValueError(f"node {node.name!r}: {node.op} needs {OPS[node.op].__name__} attrs")
            unready = [n for n in node.inputs if n is not None and n not in ready]
            if unready:
                raise ValueError(f"node {node.name!r} reads {unready} before they are produced")
            if node.output in ready or node.output not in self.tensors:
                raise ValueError(f"node {node.name!r}: output {node.output!r} is a graph input, a constant, "
                                 f"written twice or not a tensor of the graph")
            ready.add(node.output)
        unproduced = [n for n in self.outputs if n not in ready]
        if unproduced:
            raise ValueError(f"graph outputs {unproduced} are never produced")

