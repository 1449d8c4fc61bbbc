"""Host kernels: numpy implementations of the graph IR's ops, bit-exact with TFLite's int8 reference
kernels (``tensorflow/lite/kernels/internal/reference/integer_ops``), and ``run_graph``.

Every kernel takes batched int8 activations as arrays (B, *per-sample shape), works in int64 with int32
wrap-around where TFLite accumulates in int32, and returns int8 values as int64 arrays. Requantization
is ``golden.numerics.requantize`` per output channel, the NPU's own arithmetic (gemmlowp's double
rounding), so the host and the NPU agree wherever an op may run on either; LiteRT's reference
FULLY_CONNECTED rounds once instead (measured), which ``Requant.rounding`` says and
``numerics.requantize(single_round=True)`` (the NPU's ``CONFIG single_round``) computes.

One deliberate difference: ``numerics.requantize`` saturates ``acc << shift`` to int32 for multipliers
above 1 (shift > 0), where TFLite's C++ overflows; int8 models have effective scales below 1 and never
reach it.
"""
from __future__ import annotations

import numpy as np

from opennpu.golden import numerics

from . import fixedpoint
from .qlayers import dequantize_like_onnx, quantize_like_onnx
from .graph import (AddAttrs, ConcatAttrs, ConvAttrs, FloatClipAttrs, FloatLayerNormAttrs, FloatSoftmaxAttrs, FullyConnectedAttrs, Graph, LayerNormAttrs, LutAttrs, MatMulAttrs,
                    MeanAttrs, MulAttrs, Node, PadAttrs, PoolAttrs, QTensor, Requant, SoftmaxAttrs, TransposeAttrs,
                    Window)

__all__ = ["conv2d", "depthwise_conv2d", "fully_connected", "add", "average_pool2d", "pool_counts", "max_pool2d",
           "reshape", "softmax", "pad", "mean", "concatenation", "mul", "lookup", "transpose", "matmul", "layer_norm", "float_softmax",
           "dynamic_quantize", "dynamic_matmul", "dynamic_scale", "dynamic_output", "float_add", "float_layer_norm", "float_clip", "run_node",
           "check_graph_input", "run_graph", "KERNELS"]


def _requant(acc, r: Requant | None):
    """int32 accumulators (..., N) -> int8 with per-channel (or shared) multipliers; ``r`` ``None``: the
    int32 accumulators themselves."""
    acc = numerics.wrap_int32(acc)
    if r is None:
        return acc
    y = numerics.requantize(acc, np.asarray(r.multiplier), np.asarray(r.shift), r.rounding == "single")
    return np.clip(y + r.out_zp, r.qmin, r.qmax)


def _windows(x, win: Window, pad_value: int):
    """(B, H, W, C) -> (B, Ho, Wo, kh, kw, C): each output position's taps, padding filled with
    ``pad_value``."""
    b, h, w, c = x.shape
    (kh, kw), (sh, sw), (dh, dw), (pt, pl, pb, pr) = win.kernel, win.stride, win.dilation, win.pads
    ho, wo = win.out_hw(h, w)
    xp = np.full((b, pt + h + max(pb, 0), pl + w + max(pr, 0), c), pad_value, np.int64)
    xp[:, pt:pt + h, pl:pl + w] = x
    taps = np.empty((b, ho, wo, kh, kw, c), np.int64)
    for i in range(kh):
        for j in range(kw):
            taps[:, :, :, i, j] = xp[:, i * dh:i * dh + sh * (ho - 1) + 1:sh, j * dw:j * dw + sw * (wo - 1) + 1:sw]
    return taps


def _with_bias(acc, bias):
    return acc if bias is None else numerics.wrap_int32(acc + np.asarray(bias, np.int64))


def conv2d(x, w, bias, a: ConvAttrs):
    """CONV_2D (``ConvPerChannel``): x (B, H, W, I), w (O, kh, kw, I) -> (B, Ho, Wo, O)."""
    taps = _windows(np.asarray(x, np.int64) - a.in_zp, a.window, 0)
    w = np.asarray(w, np.int64)
    acc = numerics.wrap_int32(taps.reshape(*taps.shape[:3], -1) @ w.reshape(len(w), -1).T)
    return _requant(_with_bias(acc, bias), a.requant)


def depthwise_conv2d(x, w, bias, a: ConvAttrs):
    """DEPTHWISE_CONV_2D (``DepthwiseConvPerChannel``): x (B, H, W, I), w (1, kh, kw, I * M) ->
    (B, Ho, Wo, I * M), output channel ``c * M + m`` from input channel ``c``."""
    x = np.asarray(x, np.int64)
    channels = x.shape[-1]
    taps = _windows(x - a.in_zp, a.window, 0)
    w = np.asarray(w, np.int64)
    kh, kw, out_channels = w.shape[1:]
    w = w.reshape(kh, kw, channels, out_channels // channels)
    acc = np.einsum("byxijc,ijcm->byxcm", taps, w).reshape(*taps.shape[:3], out_channels)
    return _requant(_with_bias(numerics.wrap_int32(acc), bias), a.requant)


def fully_connected(x, w, bias, a: FullyConnectedAttrs):
    """FULLY_CONNECTED: x (B, ...) flattened to (B, K), w (N, K) -> (B, N)."""
    x = np.asarray(x, np.int64)
    w = np.asarray(w, np.int64)
    acc = numerics.wrap_int32((x.reshape(len(x), -1) - a.in_zp) @ w.T)
    return _requant(_with_bias(acc, bias), a.requant)


def add(x1, x2, a: AddAttrs):
    """ADD (int8): rescale both inputs to a common grid with 20 bits of headroom, add, rescale."""
    scaled = [numerics.requantize((np.asarray(x, np.int64) - zp) << a.left_shift, m, s)
              for x, zp, m, s in zip((x1, x2), a.in_zp, a.in_multiplier, a.in_shift)]
    raw_sum = numerics.wrap_int32(scaled[0] + scaled[1])
    y = numerics.requantize(raw_sum, a.out_multiplier, a.out_shift) + a.out_zp
    return np.clip(y, a.qmin, a.qmax)


def pool_counts(shape, win: Window):
    """Taps of each output position that fall inside the input: (Ho, Wo, 1)."""
    inside = _windows(np.ones((1, *shape[1:3], 1), np.int64), win, 0)
    return inside.sum(axis=(3, 4))[0]


def average_pool2d(x, a: PoolAttrs):
    """AVERAGE_POOL_2D (int8): the mean of the taps inside the input, rounded half away from zero by
    integer division (TFLite's ``(acc +- count / 2) / count``), clamped."""
    x = np.asarray(x, np.int64)
    total = _windows(x, a.window, 0).sum(axis=(3, 4))
    count = pool_counts(x.shape, a.window)
    half = count // 2
    quotient = np.where(total > 0, (total + half) // count, -((-(total - half)) // count))  # C division
    return np.clip(quotient, a.qmin, a.qmax)


def max_pool2d(x, a: PoolAttrs):
    """MAX_POOL_2D (int8): the largest tap inside the input, clamped."""
    x = np.asarray(x, np.int64)
    return np.clip(_windows(x, a.window, numerics.INT32_MIN).max(axis=(3, 4)), a.qmin, a.qmax)


def _layout_values(x) -> np.ndarray:
    """A layout op's input: float32 stays float32 (the float tensors of ``graph``), integers become int64."""
    x = np.asarray(x)
    return x if x.dtype == np.float32 else x.astype(np.int64)


def reshape(x, shape):
    """RESHAPE: same values, per-sample ``shape``."""
    x = _layout_values(x)
    return x.reshape(len(x), *shape)


def softmax(x, a: SoftmaxAttrs):
    """SOFTMAX (int8 -> int8, output grid 1/256, -128) over the last axis: TFLite's reference
    ``Softmax`` in gemmlowp fixed point (exp of Q5.26 differences, sum in Q12.19, reciprocal)."""
    x = np.asarray(x, np.int64)
    diff = x - x.max(axis=-1, keepdims=True)
    inside = diff >= a.diff_min
    scaled = numerics.srdhm(diff << a.input_left_shift, a.input_multiplier)
    exp = fixedpoint.exp_on_negative_values(np.where(inside, scaled, 0))
    sum_of_exps = np.where(inside, numerics.rdbpot(exp, 12), 0).sum(axis=-1, keepdims=True)
    scale, bits_over_unit = fixedpoint.get_reciprocal(sum_of_exps, 12)
    y = numerics.rdbpot(numerics.srdhm(scale, exp), bits_over_unit + 31 - 8) - 128
    return np.where(inside, np.clip(y, -128, 127), -128)


def pad(x, a: PadAttrs):
    """PAD / PADV2 (int8): the input values unchanged, ``a.value`` around them."""
    return np.pad(np.asarray(x, np.int64), ((0, 0), *a.pads), constant_values=a.value)


def mean(x, a: MeanAttrs):
    """MEAN (int8): the sum of ``x - in_zp`` over the reduced axes in int32, requantized (gemmlowp's
    double rounding, the multiplier already holding 1/n), plus the output zero point, clamped."""
    x = np.asarray(x, np.int64)
    axes = tuple(i + 1 for i in a.axes)
    total = numerics.wrap_int32(x.sum(axis=axes, keepdims=a.keep_dims) -
                                a.in_zp * int(np.prod([x.shape[i] for i in axes])))
    return np.clip(numerics.requantize(total, a.multiplier, a.shift) + a.out_zp, -128, 127)


def concatenation(xs, a: ConcatAttrs):
    """CONCATENATION (int8, one grid for all inputs and the output): the values side by side."""
    return np.concatenate([np.asarray(x, np.int64) for x in xs], axis=a.axis + 1)


def mul(x1, x2, a: MulAttrs):
    """MUL (int8): the product of the zero-point-free inputs (numpy broadcasting), requantized (double
    rounding), plus the output zero point, clamped."""
    product = (np.asarray(x1, np.int64) - a.in_zp[0]) * (np.asarray(x2, np.int64) - a.in_zp[1])
    return np.clip(numerics.requantize(product, a.multiplier, a.shift) + a.out_zp, a.qmin, a.qmax)


def lookup(x, a: LutAttrs):
    """LOGISTIC, TANH (int8), ``lut``: the table entry of each value."""
    return np.asarray(a.table, np.int64)[np.asarray(x, np.int64) + 128]


def transpose(x, a: TransposeAttrs):
    """Permute the per-sample axes (the batch axis stays first)."""
    return _layout_values(x).transpose(0, *(p + 1 for p in a.perm))


def matmul(a, b, attrs: MatMulAttrs):
    """Two activations multiplied, zero points removed, int32 sums requantized (per tensor)."""
    za, zb = attrs.in_zp
    acc = numerics.wrap_int32((np.asarray(a, np.int64) - za) @ (np.asarray(b, np.int64) - zb))
    return _requant(acc, attrs.requant)


def float_softmax(x, a: FloatSoftmaxAttrs):
    """Softmax over the last axis in float32 (ONNX's definition between its dequantize and quantize)."""
    x = dequantize_like_onnx(x, *a.in_q)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return quantize_like_onnx(e / e.sum(axis=-1, keepdims=True, dtype=np.float32), *a.out_q)


def float_layer_norm(x, a: FloatLayerNormAttrs | LayerNormAttrs):
    """LayerNormalization over the last axis in float32 (ONNX's definition)."""
    f32 = np.float32
    x = np.asarray(x, f32)
    mean = x.mean(axis=-1, keepdims=True, dtype=f32)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True, dtype=f32)
    return (x - mean) / np.sqrt(var + f32(a.epsilon)) * np.asarray(a.gamma, f32) + np.asarray(a.beta, f32)


def layer_norm(x, a: LayerNormAttrs):
    """``float_layer_norm`` between a dequantize and a quantize (round half to even)."""
    return quantize_like_onnx(float_layer_norm(dequantize_like_onnx(x, *a.in_q), a), *a.out_q)


def dynamic_quantize(x) -> tuple:
    """ONNX's DynamicQuantizeLinear of float32 ``x`` (the whole array): (uint8 values as int64, scale
    (float32), zero point). The range is [min(x, 0), max(x, 0)] over 255 steps (scale 1/255 when it is
    empty), the zero point ``-min / scale`` rounded half to even, the values ``x / scale`` rounded half to
    even plus the zero point, saturated to 0..255."""
    x = np.asarray(x, np.float32)
    hi, lo = np.float32(max(0.0, x.max())), np.float32(min(0.0, x.min()))
    scale = np.float32(1.0 if hi == lo else hi - lo) / np.float32(255)
    zp = np.rint(np.clip(np.float32(0) - lo / scale, 0, 255))
    return np.clip(np.rint(x / scale) + zp, 0, 255).astype(np.int64), scale, int(zp)


def dynamic_matmul(a, b, weights: QTensor | None):
    """quantize_dynamic's MatMul (``dynamic_matmul``): ``weights`` the constant second operand (its
    integer data, scale and zero point; then ``b`` is its data), else ``b`` a float32 activation quantized
    like ``a``. int32 sums as MatMulInteger, then ``dynamic_output``."""
    qa, sa, za = dynamic_quantize(a)
    if weights is None:
        qb, sb, zb = dynamic_quantize(b)
        scale = sa * sb
    else:
        qb, zb = np.asarray(b, np.int64), np.asarray(weights.zero_point, np.int64)
        scale = dynamic_scale(sa, weights)
    return dynamic_output(numerics.wrap_int32((qa - za) @ (qb - zb)), scale)


def dynamic_scale(input_scale, weights: QTensor) -> np.ndarray:
    """The float32 product of a dynamic input's scale and the weights' scale (one, or one per column)."""
    return np.float32(input_scale) * np.asarray(weights.scale, np.float32)


def dynamic_output(acc, scale) -> np.ndarray:
    """int32 sums -> float32 as onnxruntime's Cast and Mul by the product of the scales compute them."""
    return np.asarray(acc, np.int64).astype(np.int32).astype(np.float32) * scale


def float_add(a, b):
    """float32 sum, numpy broadcasting (ONNX ``Add``)."""
    return np.asarray(a, np.float32) + np.asarray(b, np.float32)


def float_clip(x, a: FloatClipAttrs):
    """float32 clamp to [lo, hi] (ONNX ``Relu`` / ``Clip``)."""
    return np.clip(np.asarray(x, np.float32), np.float32(a.lo), np.float32(a.hi))


def _inputs(node: Node, values: dict, graph: Graph) -> list:
    return [None if name is None else values[name] if name in values else graph.tensors[name].data
            for name in node.inputs]


#: op -> kernel(graph, node, input arrays)
KERNELS = {
    "conv2d": lambda g, n, ins: conv2d(*ins, n.attrs),
    "depthwise_conv2d": lambda g, n, ins: depthwise_conv2d(*ins, n.attrs),
    "fully_connected": lambda g, n, ins: fully_connected(*ins, n.attrs),
    "add": lambda g, n, ins: add(*ins, n.attrs),
    "average_pool2d": lambda g, n, ins: average_pool2d(*ins, n.attrs),
    "max_pool2d": lambda g, n, ins: max_pool2d(*ins, n.attrs),
    "reshape": lambda g, n, ins: reshape(ins[0], g.tensors[n.output].shape),
    "softmax": lambda g, n, ins: softmax(*ins, n.attrs),
    "pad": lambda g, n, ins: pad(*ins, n.attrs),
    "mean": lambda g, n, ins: mean(*ins, n.attrs),
    "concatenation": lambda g, n, ins: concatenation(ins, n.attrs),
    "mul": lambda g, n, ins: mul(*ins, n.attrs),
    "logistic": lambda g, n, ins: lookup(*ins, n.attrs),
    "tanh": lambda g, n, ins: lookup(*ins, n.attrs),
    "lut": lambda g, n, ins: lookup(*ins, n.attrs),
    "transpose": lambda g, n, ins: transpose(*ins, n.attrs),
    "matmul": lambda g, n, ins: matmul(*ins, n.attrs),
    "layer_norm": lambda g, n, ins: layer_norm(*ins, n.attrs),
    "float_softmax": lambda g, n, ins: float_softmax(*ins, n.attrs),
    "dynamic_matmul": lambda g, n, ins: dynamic_matmul(*ins, g.tensors[n.inputs[1]] if g.tensors[n.inputs[1]].is_const
                                                      else None),
    "float_add": lambda g, n, ins: float_add(*ins),
    "float_clip": lambda g, n, ins: float_clip(*ins, n.attrs),
    "float_layer_norm": lambda g, n, ins: float_layer_norm(*ins, n.attrs),
    "quantize": lambda g, n, ins: quantize_like_onnx(ins[0], g.tensors[n.output].scale[0], g.tensors[n.output].zero_point[0]),
    "dequantize": lambda g, n, ins: dequantize_like_onnx(ins[0], g.tensors[n.inputs[0]].scale[0],
                                                        g.tensors[n.inputs[0]].zero_point[0]),
}


def run_node(graph: Graph, node: Node, values: dict) -> np.ndarray:
    """Run one node on the host: ``values`` maps activation names to batched arrays."""
    return KERNELS[node.op](graph, node, _inputs(node, values, graph))


def check_graph_input(graph: Graph, x) -> np.ndarray:
    """The batched input of a one-input graph as int64 (float32 for a float32 input), or ``ValueError``
    if the graph has several inputs or ``x`` is not of the input's type and shape (batch first)."""
    if len(graph.inputs) != 1:
        raise ValueError(f"the graph must have one input, this one has {len(graph.inputs)}")
    spec = graph.tensors[graph.inputs[0]]
    x = np.asarray(x)
    if x.dtype != np.dtype(spec.dtype) or x.shape[1:] != tuple(spec.shape) or x.ndim != len(spec.shape) + 1:
        raise ValueError(f"input {spec.name!r} must be {spec.dtype} of shape (N, {', '.join(map(str, spec.shape))}), "
                         f"got {x.dtype} {x.shape}")
    return x if spec.dtype == "float32" else x.astype(np.int64)


def run_graph(graph: Graph, x) -> list:
    """Run ``graph`` on the host for the batched int8 input ``x`` (B, *input shape) of a one-input
    graph; returns the list of output arrays (int8, int32 for raw accumulators, or float32). A wrong shape or dtype
    raises ``ValueError`` before anything runs."""
    values = {graph.inputs[0]: check_graph_input(graph, x)}
    for node in graph.nodes:
        values[node.output] = run_node(graph, node, values)
    return [values[name].astype(graph.tensors[name].dtype) for name in graph.outputs]
