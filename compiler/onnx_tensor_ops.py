"""ONNX op handlers of the importer (``onnx_import._Importer`` mixes them in): shape ops (Flatten,
Reshape, Transpose), elementwise ops (unary functions, Clip, Add / Mul / Div / Sub with scalars, Add and
Mul of two tensors, constant bias adds), BatchNormalization, LayerNormalization, pools, Softmax and
Concat. Each returns the symbolic value of its output (``onnx_values``); the IR nodes are emitted when a
``QuantizeLinear`` finishes a float result."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from opennpu.golden import numerics

from .graph import TransposeAttrs, Window
from .onnx_values import OFFSET_GAIN, _Acc, _Const, _Deq, _DeqConst, _Float, _FloatInput, _Q

__all__ = ["TensorOps", "UNARY_FUNCTIONS"]


def _erf(x):
    import math
    return np.vectorize(math.erf)(x)


#: Unary float functions a LUT can implement: ONNX op -> f(x, attributes).
UNARY_FUNCTIONS = {
    "Relu": lambda x, a: np.maximum(x, 0.0),
    "Sigmoid": lambda x, a: 1.0 / (1.0 + np.exp(-x)),
    "Tanh": lambda x, a: np.tanh(x),
    "LeakyRelu": lambda x, a: np.where(x >= 0, x, a.get("alpha", 0.01) * x),
    "HardSigmoid": lambda x, a: np.clip(a.get("alpha", 0.2) * x + a.get("beta", 0.5), 0.0, 1.0),
    "HardSwish": lambda x, a: x * np.clip(x / 6.0 + 0.5, 0.0, 1.0),
    "Elu": lambda x, a: np.where(x >= 0, x, a.get("alpha", 1.0) * (np.exp(x) - 1.0)),
    "Softplus": lambda x, a: np.logaddexp(0.0, x),
    "Erf": lambda x, a: _erf(x),
    "Gelu": lambda x, a: (0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3))))
    if a.get("approximate", "none") == "tanh" else 0.5 * x * (1.0 + _erf(x / np.sqrt(2.0))),
}
class TensorOps:
    """Handlers ``_op_<Type>`` (and ``_unary``) for the ops above."""

    def _reshaped(self, node, v, shape):
        shape = tuple(int(d) for d in shape)
        if int(np.prod(shape)) != int(np.prod(v.shape)):
            raise self._error(node, f"cannot reshape per-sample {v.shape} to {shape}")
        if isinstance(v, _FloatInput):
            return _FloatInput(shape)
        q = v.q if isinstance(v, _Deq) else v
        if not isinstance(q, _Q) or q.zp is None:
            raise self._error(node, f"cannot reshape a {type(v).__name__.strip('_')} tensor")
        plain = self._plain(q)
        out = replace(plain, name=self._emit("reshape", self._name(node), node.op_type, (plain.name,),
                                             node.output[0], shape, q.scale, q.zp), shape=shape)
        return replace(v, q=out) if isinstance(v, _Deq) else out

    def _op_Flatten(self, node):
        if self._attrs(node).get("axis", 1) != 1:
            raise self._error(node, "only axis=1 (keep the batch axis) is supported")
        v = self._get(node, 0)
        return self._reshaped(node, v, (int(np.prod(getattr(v, "shape", ()))),))

    def _op_Reshape(self, node):
        v = self._get(node, 0)
        return self._reshaped(node, v, self._reshape_target(node, v))

    def _reshape_target(self, node, v) -> tuple:
        """The per-sample shape ``Reshape`` gives ``v`` (its shape input: batch axis first, 0 keeps an axis, -1
        is inferred)."""
        target = [int(d) for d in self._const(node, 1)]
        size = int(np.prod(getattr(v, "shape", (0,))))
        if not target or target[0] not in (0, -1) and target[0] != self.in_batch:
            raise self._error(node, f"reshape to {target} must keep the batch axis first")
        rest = target[1:]
        if target[0] == -1 and -1 in rest:
            raise self._error(node, f"reshape to {target}: the batch axis cannot be inferred")
        shape = getattr(v, "shape", ())
        rest = [shape[i] if d == 0 and i < len(shape) else d for i, d in enumerate(rest)]
        if -1 in rest:
            known = int(np.prod([d for d in rest if d != -1]))
            rest = [size // known if d == -1 else d for d in rest]
        return tuple(rest)

    def _op_Transpose(self, node):
        v = self._get(node, 0)
        q = v.q if isinstance(v, _Deq) else v
        if not isinstance(q, _Q) or isinstance(v, _Deq) and v.fns:
            raise self._error(node, "needs a quantized (or dequantized) tensor")
        per_sample = self._per_sample_perm(node, len(q.shape))
        plain = self._shaped(self._plain(q), q.shape)
        shape = tuple(q.shape[p] for p in per_sample)
        out = replace(plain, name=self._emit("transpose", self._name(node), "Transpose", (plain.name,), node.output[0],
                                             shape, q.scale, q.zp, TransposeAttrs(per_sample)), shape=shape)
        return replace(v, q=out) if isinstance(v, _Deq) else out

    def _per_sample_perm(self, node, rank: int) -> tuple:
        """``Transpose``'s permutation of a tensor of ``rank`` per-sample axes, less the batch axis (which must
        stay first)."""
        perm = [int(p) for p in self._attrs(node).get("perm", range(rank + 1)[::-1])]
        if perm[0] != 0:
            raise self._error(node, f"perm {perm} moves the batch axis")
        return tuple(p - 1 for p in perm[1:])

    def _unary(self, node):
        v = self._get(node, 0)
        attrs = self._attrs(node)
        if isinstance(v, (_Acc, _Float)) and node.op_type == "Relu":
            v.lo = max(v.lo, 0.0)
            return v
        fn = UNARY_FUNCTIONS[node.op_type]
        if isinstance(v, _Deq):
            return replace(v, fns=v.fns + ((node.op_type, lambda x, fn=fn, a=attrs: fn(x, a)),))
        raise self._error(node, f"applies to a {type(v).__name__.strip('_')} tensor; it needs a "
                                f"QuantizeLinear/DequantizeLinear pair on its input")

    def _clip_bounds(self, node) -> tuple[float, float]:
        """``Clip``'s (min, max): inputs 1 and 2 (opset 11+) or attributes, unbounded where absent."""
        attrs = self._attrs(node)
        lo = self._const(node, 1, optional=True)
        hi = self._const(node, 2, optional=True)
        lo = float(attrs.get("min", -np.inf)) if lo is None else float(np.asarray(lo).reshape(()))
        hi = float(attrs.get("max", np.inf)) if hi is None else float(np.asarray(hi).reshape(()))
        return lo, hi

    def _op_Clip(self, node):
        v = self._get(node, 0)
        lo, hi = self._clip_bounds(node)
        if isinstance(v, (_Acc, _Float)):
            v.lo, v.hi = max(v.lo, lo), min(v.hi, hi)
            return v
        if isinstance(v, _Deq):
            return replace(v, fns=v.fns + (("Clip", lambda x: np.clip(x, lo, hi)),))
        raise self._error(node, f"applies to a {type(v).__name__.strip('_')} tensor")

    @staticmethod
    def _scalar(v) -> float | None:
        """The value of a one-element constant (or dequantized constant), else None."""
        if isinstance(v, _DeqConst) and v.q.size == v.scale.size == v.zp.size == 1:
            return float(v.real().ravel()[0])
        if isinstance(v, _Const) and np.asarray(v.value).size == 1:
            return float(np.asarray(v.value, np.float64).ravel()[0])
        return None

    #: elementwise ops with a scalar constant c as unary functions: (dequantized x, c) -> f(x)
    _WITH_SCALAR = {"Mul": lambda x, c: x * c, "Div": lambda x, c: x / c, "Add": lambda x, c: x + c,
                    "Sub": lambda x, c: x - c}

    def _with_scalar(self, node):
        """Mul/Div/Add/Sub of a dequantized tensor and a scalar constant: a unary function (a table)."""
        x, c = self._get(node, 0), self._get(node, 1)
        if self._scalar(x) is not None and node.op_type in ("Mul", "Add"):
            x, c = c, x
        k = self._scalar(c)
        if not isinstance(x, _Deq) or k is None:
            raise self._error(node, "only a dequantized tensor and a scalar constant are supported here")
        fn = self._WITH_SCALAR[node.op_type]
        return replace(x, fns=x.fns + ((node.op_type, lambda v: fn(v, k)),))

    def _op_Mul(self, node):
        x, y = self._get(node, 0), self._get(node, 1)
        if isinstance(x, _Deq) and isinstance(y, _Deq):      # two tensors (GELU's x * Phi(x)): TFLite's MUL
            a, b, shape = self._pair(node, self._quant_input(node, x), self._quant_input(node, y))
            return _Float("mul", self._name(node), "Mul", (a, b), shape)
        return self._with_scalar(node)

    def _op_Div(self, node):
        return self._with_scalar(node)

    def _op_Sub(self, node):
        return self._with_scalar(node)

    def _float_const(self, node, i, n: int, what: str) -> tuple:
        v = self._get(node, i, optional=True)
        if v is None:
            return (0.0,) * n
        if isinstance(v, _DeqConst):
            value = v.real()
        elif isinstance(v, _Const):
            value = np.asarray(v.value, np.float64)
        else:
            raise self._error(node, f"{what} must be a constant")
        value = np.broadcast_to(value.astype(np.float32).ravel(), (n,)) if value.size in (1, n) else None
        if value is None:
            raise self._error(node, f"{what} needs 1 or {n} values")
        return tuple(float(f) for f in value)

    def _op_LayerNormalization(self, node):
        """LayerNormalization over the last axis: a float host op between its dequantize and quantize."""
        v = self._get(node, 0)
        if isinstance(v, _FloatInput):           # a float head (the QOperator form leaves LayerNorm float)
            return self._dyn_LayerNormalization(node)
        q = self._quant_input(node, v)
        return _Float("layer_norm", self._name(node), "LayerNormalization", (self._plain(q),), q.shape,
                      params=self._layer_norm_params(node, q.shape))

    def _layer_norm_params(self, node, shape) -> tuple:
        """(gamma, beta, epsilon) of a LayerNormalization over the last axis of per-sample ``shape``."""
        if len(node.output) > 1 and any(node.output[1:]):
            raise self._error(node, "the Mean / InvStdDev outputs are not supported")
        attrs = self._attrs(node)
        if int(attrs.get("axis", -1)) not in (-1, len(shape)):
            raise self._error(node, f"normalization from axis {attrs['axis']}: only over the last axis")
        n = shape[-1]
        return (self._float_const(node, 1, n, "scale"), self._float_const(node, 2, n, "bias"),
                float(attrs.get("epsilon", 1e-5)))

    def _op_Add(self, node):
        x, y = self._get(node, 0), self._get(node, 1)
        if isinstance(x, (_Const, _DeqConst)):
            x, y = y, x
        if isinstance(x, _Acc) and isinstance(y, (_Const, _DeqConst)):
            return self._add_bias(node, x, y)
        if isinstance(x, _Deq) and x.fns and self._scalar(y) is not None:
            return self._with_scalar(node)
        if isinstance(x, _Deq) and isinstance(y, (_Const, _DeqConst)):
            return self._add_bias(node, self._offset(node, self._quant_input(node, x), y), y)
        if isinstance(x, _Deq) and isinstance(y, _Deq):
            return self._sum(node, self._quant_input(node, x), self._quant_input(node, y))
        raise self._error(node, f"cannot add {type(x).__name__.strip('_')} and {type(y).__name__.strip('_')}: "
                                f"each operand must be a dequantized tensor or a constant")

    def _sum(self, node, a: _Q, b: _Q, source="Add") -> _Float:
        """Two quantized tensors added (TFLite's integer ADD)."""
        a, b, shape = self._pair(node, a, b)
        return _Float("add", self._name(node), source, (a, b), shape)

    def _pair(self, node, a: _Q, b: _Q) -> tuple:
        """Two operands of an elementwise op in one layout (channels-last if either is) and their ONNX
        result shape."""
        if a.shape != b.shape:
            if a.cl or b.cl:
                raise self._error(node, f"adding {a.shape} and {b.shape}: broadcasting is supported in ONNX "
                                        f"order only, not on convolution outputs")
            shape = tuple(np.broadcast_shapes(a.shape, b.shape))
            a, b = self._shaped(a, a.shape), self._shaped(b, b.shape)
        elif (a.cl or b.cl) and len(a.shape) in (2, 3):
            a, b, shape = self._channels_last(node, a), self._channels_last(node, b), a.shape
        else:
            a, b, shape = self._plain(a), self._plain(b), a.shape
            b = self._shaped(b, self._ir_shape(a))
        return a, b, shape

    @staticmethod
    def _channel_axis(shape: tuple, v_shape: tuple):
        """The per-sample axis of ``v_shape`` along which a constant of ONNX shape ``shape`` (broadcast
        right-aligned against (batch, *v_shape)) runs: None for a scalar, False unless it has one value per
        entry of a single axis."""
        shape = tuple(shape)
        lead = len(shape) - len(v_shape)
        if lead > 1 or lead > 0 and any(d != 1 for d in shape[:lead]):
            return False
        tail = shape[max(lead, 0):]
        offset = len(v_shape) - len(tail)
        big = [i for i, d in enumerate(tail) if d != 1]
        if not big:
            return None
        if len(big) == 1 and tail[big[0]] == v_shape[big[0] + offset]:
            return big[0] + offset
        return False

    def _add_bias(self, node, acc: _Acc, bias) -> _Acc:
        """Fold a constant (per output channel or scalar) into the accumulator's bias."""
        if acc.bias is not None or acc.lo != -np.inf or acc.hi != np.inf:
            raise self._error(node, "a second bias, or a bias after the activation, is not supported")
        n = acc.shape[0] if acc.cl else acc.shape[-1]
        shape = np.shape(bias.value if isinstance(bias, _Const) else bias.q)
        axis = self._channel_axis(shape, acc.shape)
        if axis is False or axis is not None and axis != (0 if acc.cl else len(acc.shape) - 1):
            raise self._error(node, f"a constant of shape {shape} does not broadcast per output channel of "
                                    f"{acc.shape}")
        bias = _Const(np.asarray(bias.value).reshape(-1)) if isinstance(bias, _Const) else \
            replace(bias, q=bias.q.reshape(-1))
        acc.bias = self._bias(node, bias, acc.acc_scale, n)
        return acc

    def _offset(self, node, q: _Q, constant) -> _Acc:
        """A constant added to an already quantized tensor (what onnxruntime's quantizer makes of
        MatMul + Add: MatMul -> Q -> DQ -> Add): an identity layer with weights ``OFFSET_GAIN`` * I (a
        1x1 convolution over channels-last or (sequence, features) tensors), so the constant lands in the
        bias at 1/OFFSET_GAIN of an input LSB and the result is requantized once, like onnxruntime's
        QLinearAdd. The constant runs along the channels (axis 0 of an image tensor, the last axis
        otherwise) or is a scalar."""
        shape = np.shape(constant.value if isinstance(constant, _Const) else constant.q)
        axis = self._channel_axis(shape, q.shape)
        if axis is False:
            raise self._error(node, f"only a per-channel or scalar constant can be added to {q.shape} "
                                    f"(got {tuple(shape)})")
        image = q.cl or len(q.shape) == 3 or axis == 0 and len(q.shape) == 2
        c = q.shape[0] if image else q.shape[-1]
        eye = OFFSET_GAIN * np.eye(c, dtype=np.int64)
        if image:
            return self._conv(node, q, eye.reshape(c, c, *[1] * (len(q.shape) - 1)), 1.0 / OFFSET_GAIN, None, {},
                              "Add")
        return self._gemm(node, q, eye, 1.0 / OFFSET_GAIN, None, source="Add")

    def _op_BatchNormalization(self, node):
        """Inference BatchNormalization not folded into a convolution (after a ReLU or an Add): the
        per-channel affine ``a * x + b`` as a 1x1 depthwise convolution (a diagonal layer for features)
        with weights +-``OFFSET_GAIN`` and one requantization per channel carrying ``|a|``; ``b`` is its
        bias."""
        if len(node.output) > 1 and any(node.output[1:]):
            raise self._error(node, "training outputs (running mean / var) are not supported")
        q = self._quant_input(node, self._get(node, 0))
        c = q.shape[0]
        gamma, beta, mean, var = (np.asarray(self._float_const(node, i, c, what), np.float64)
                                  for i, what in ((1, "scale"), (2, "B"), (3, "mean"), (4, "var")))
        a = gamma / np.sqrt(var + float(self._attrs(node).get("epsilon", 1e-5)))
        if not np.all(np.isfinite(a)):
            raise self._error(node, "a channel's scale gamma / sqrt(var + epsilon) is not finite")
        # a channel with a == 0 outputs its shift alone: weight 0, the accumulator grid of a == 1
        acc_scale = q.scale * np.where(a == 0, 1.0, np.abs(a)) / OFFSET_GAIN
        bias = np.rint((beta - a * mean) / acc_scale)
        if bias.min() < numerics.INT32_MIN or bias.max() > numerics.INT32_MAX:
            raise self._error(node, "the shift beta - a * mean overflows int32 on the accumulator grid")
        signs = (np.sign(a) * OFFSET_GAIN).astype(np.int64)
        if len(q.shape) == 1:
            return _Acc(self._name(node), "fully_connected", "BatchNormalization", self._plain(q), np.diag(signs),
                        bias.astype(np.int64), acc_scale, None, q.shape, q.shape, False)
        xc = self._channels_last(node, q)
        window = Window((1, 1), (1, 1), (1, 1), (0, 0, 0, 0))
        return _Acc(self._name(node), "depthwise_conv2d", "BatchNormalization", xc, signs.reshape(1, 1, 1, c),
                    bias.astype(np.int64), acc_scale, window, q.shape, self._ir_shape(xc), True)

    def _pool(self, node, kind: str, v, global_pool=False, source=None, x=None) -> _Float:
        x = x if x is not None else self._quant_input(node, v)
        if len(x.shape) not in (2, 3):
            raise self._error(node, f"pools (C, H, W) or (C, L) tensors, got {x.shape} per sample")
        attrs = self._attrs(node)
        spatial = tuple(x.shape[1:])
        if attrs.get("ceil_mode", 0) or attrs.get("storage_order", 0) or any(d != 1 for d in attrs.get("dilations", ())):
            raise self._error(node, "ceil_mode, storage_order and dilations are not supported")
        kernel = spatial if global_pool else tuple(attrs.get("kernel_shape", ()))
        window = self._window(node, {} if global_pool else attrs, spatial, kernel)
        xc = self._channels_last(node, x)
        ho, wo = window.out_hw(*self._ir_shape(xc)[:2])
        shape = (x.shape[0], ho, wo) if len(x.shape) == 3 else (x.shape[0], wo)
        return _Float(kind, self._name(node), source or node.op_type, (xc,), shape, window,
                      bool(attrs.get("count_include_pad", 0)))

    def _op_MaxPool(self, node):
        if len(node.output) > 1 and node.output[1]:
            raise self._error(node, "the Indices output is not supported")
        v = self._get(node, 0)
        if isinstance(v, _Q):           # the QOperator form: the max of the int8 values, on their grid
            return self._emit_float(node, self._pool(node, "max_pool", None, x=v), v.scale, v.zp, v.dtype)
        return self._pool(node, "max_pool", v)

    def _op_AveragePool(self, node):
        return self._pool(node, "avg_pool", self._get(node, 0))

    def _op_GlobalAveragePool(self, node):
        return self._pool(node, "avg_pool", self._get(node, 0), global_pool=True)

    def _op_Softmax(self, node):
        return self._softmax(node, self._quant_input(node, self._get(node, 0)), "Softmax")

    def _softmax(self, node, q: _Q, source: str) -> _Float:
        axis = int(self._attrs(node).get("axis", -1 if self.opset >= 13 else 1))
        if axis not in (-1, len(q.shape)) or self.opset < 13 and len(q.shape) > 1:
            raise self._error(node, f"softmax over axis {axis} of (batch, {q.shape}) (opset {self.opset}): only "
                                    f"over the last axis")
        return _Float("softmax", self._name(node), source, (self._plain(q),), q.shape)

    def _concat(self, node, parts: list, source: str) -> _Float:
        rank = len(parts[0].shape)
        axis = int(self._attrs(node).get("axis", 1))
        axis = axis - 1 if axis >= 0 else axis + rank
        if not 0 <= axis < rank:
            raise self._error(node, f"concatenation along the batch axis (or axis {axis + 1} of rank {rank + 1}) "
                                    f"is not supported")
        others = {q.shape[:axis] + q.shape[axis + 1:] for q in parts}
        if len(others) != 1 or any(len(q.shape) != rank for q in parts):
            raise self._error(node, f"inputs {[q.shape for q in parts]} differ beyond axis {axis + 1}")
        shape = list(parts[0].shape)
        shape[axis] = sum(q.shape[axis] for q in parts)
        return _Float("concat", self._name(node), source, tuple(parts), tuple(shape), axis=axis)

    def _op_Concat(self, node):
        return self._concat(node, [self._quant_input(node, self._get(node, i)) for i in range(len(node.input))],
                            "Concat")
