"""Import a quantized ONNX model into a ``QuantModel`` (a chain of integer GEMM layers).

Accepted forms
--------------
* **QDQ**: ``QuantizeLinear`` / ``DequantizeLinear`` around ``MatMul``, ``Gemm`` and ``Conv`` (what
  onnxruntime's ``quantize_static(quant_format=QDQ)`` writes), with an optional bias ``Add`` and
  ``Relu``/``Clip`` between the GEMM and its ``QuantizeLinear``.
* **QLinear ops**: ``QLinearMatMul``, ``QLinearConv``, ``QGemm`` and ``QLinearSigmoid`` /
  ``QLinearLeakyRelu`` (com.microsoft).
* Unary functions on a dequantized tensor followed by ``QuantizeLinear`` (``Relu``, ``Clip``,
  ``Sigmoid``, ``Tanh``, ``LeakyRelu``, ``HardSigmoid``, ``HardSwish``, ``Gelu``, ``Elu``, ``Softplus``,
  ``Identity``) become a 256-entry LUT on the producing layer (or a narrower clamp when the table is
  one); ``Flatten``/``Reshape`` that keep the batch axis first are free (the flat order is unchanged);
  ``Identity``/``Dropout`` pass through.

How the import works: the graph is interpreted symbolically in topological order. Each tensor is a
constant, the float graph input, a quantized tensor (int8 grid, produced by the input quantization or a
layer), its dequantized view (plus pending unary functions), or a float GEMM accumulator waiting for its
``QuantizeLinear``. Quantizing an accumulator emits a layer; everything else only moves metadata.

Contracts
---------
* Activations per tensor; weights per tensor or per output channel (``quantize_static``'s default for
  Conv, ``per_channel=True`` for MatMul/Gemm): the quantization axis must be the output-channel axis
  (Conv weights (O, I, kh, kw): 0; MatMul weights (K, N): 1; Gemm: 0 with ``transB``, else 1), and the
  layer then requantizes with one multiplier and shift per output channel, its bias brought to each
  channel's accumulator scale ``s_a * s_w[c]``. Weight zero points must be equal across channels; one
  that is non-zero is folded when ``w - zp`` fits int8.
* int8 and uint8 activations (uint8 is shifted onto the int8 grid); int8/uint8 weights; 2-D Conv with
  groups (block-diagonal weights), any stride/padding/dilation.
* The graph must be a single chain with one input and one quantized (or dequantized) output.
* Anything else raises one ``ValueError`` naming the op and the node.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace

import numpy as np

from opennpu.golden import numerics

from .qlayers import ConvGeom, QLayer, QuantModel, TensorSpec

__all__ = ["import_onnx", "onnxruntime_session", "UNARY_FUNCTIONS"]


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
    "Gelu": lambda x, a: (0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3))))
    if a.get("approximate", "none") == "tanh" else 0.5 * x * (1.0 + _erf(x / np.sqrt(2.0))),
}
_PASS_THROUGH = ("Identity", "Dropout")
#: Identity weight of the layer that adds a constant to a quantized tensor (see ``_offset_layer``).
OFFSET_GAIN = 64
_QUANT_TYPES = {"int8": 0, "uint8": 128}       # dtype -> shift onto the int8 grid


# -- symbolic values --------------------------------------------------------------------------------
@dataclass
class _Const:
    value: np.ndarray


@dataclass
class _DeqConst:
    """``DequantizeLinear`` of an initializer: integer values, scale and zero point arrays, and the axis
    (non-negative) along which per-axis scales and zero points run."""
    q: np.ndarray
    scale: np.ndarray
    zp: np.ndarray
    dtype: str
    axis: int = 1


@dataclass
class _FloatInput:
    shape: tuple


@dataclass
class _Quant:
    """An int8-grid tensor: ``src`` -1 for the model input, else the index of the producing layer."""
    src: int
    shape: tuple
    scale: float
    zp: int
    dtype: str


@dataclass
class _Deq:
    """``DequantizeLinear`` of a ``_Quant``, with unary functions applied since (name, f)."""
    q: _Quant
    shape: tuple
    fns: tuple = ()


@dataclass
class _Acc:
    """Float GEMM result ``acc_scale * (A @ W + bias)`` clamped to [lo, hi], before quantization;
    ``acc_scale`` is a float, or N values (one per output channel) for per-channel weight scales."""
    name: str
    op: str
    w: np.ndarray
    bias: np.ndarray | None
    acc_scale: float | np.ndarray
    src: _Quant
    in_shape: tuple
    out_shape: tuple
    conv: ConvGeom | None
    lo: float = -np.inf
    hi: float = np.inf


class _Importer:
    def __init__(self, model):
        import onnx
        from onnx import numpy_helper
        self.onnx, self.numpy_helper = onnx, numpy_helper
        graph = model.graph
        self.values: dict = {t.name: _Const(numpy_helper.to_array(t)) for t in graph.initializer}
        self.layers: list[QLayer] = []
        inputs = [i for i in graph.input if i.name not in self.values]
        if len(inputs) != 1 or len(graph.output) != 1:
            raise ValueError(f"the model must have one input and one output, got {len(inputs)} inputs "
                             f"and {len(graph.output)} outputs")
        self.graph = graph
        self._input(inputs[0])

    # -- graph input / output -----------------------------------------------------------------------
    def _input(self, value_info):
        t = value_info.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        if len(dims) < 2 or any(d is None or d < 1 for d in dims[1:]):
            raise ValueError(f"input {value_info.name!r}: need shape (batch, fixed dims...), got {dims}")
        dtype = self.onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name
        if dtype not in ("float32", *_QUANT_TYPES):
            raise ValueError(f"input {value_info.name!r}: element type {dtype} is not supported "
                             f"(float32, int8, uint8)")
        self.in_name, self.in_batch, self.in_dtype = value_info.name, dims[0] or None, dtype
        self.in_shape, self.in_q = tuple(dims[1:]), None
        if dtype == "float32":
            self.values[value_info.name] = _FloatInput(self.in_shape)
        else:       # a quantized input: its grid comes from the first op that reads it with a scale
            self.values[value_info.name] = _Quant(-1, self.in_shape, np.nan, -_QUANT_TYPES[dtype], dtype)

    def model(self) -> QuantModel:
        out = self.graph.output[0].name
        v = self.values.get(out)
        if isinstance(v, _Deq) and not v.fns:
            q, dtype = v.q, "float32"
        elif isinstance(v, _Quant):
            q, dtype = v, v.dtype
        else:
            raise ValueError(f"output {out!r} must be the (dequantized) result of a quantized layer, "
                             f"got {type(v).__name__.strip('_')}")
        if not self.layers or q.src != len(self.layers) - 1:
            raise ValueError(f"output {out!r} is not the result of the last layer of a chain")
        if self.in_q is None:
            raise ValueError(f"input {self.in_name!r} is never quantized")
        spec_in = TensorSpec(self.in_name, self.in_shape, self.in_batch, self.in_dtype, *self.in_q)
        spec_out = TensorSpec(out, v.shape, self.in_batch, dtype, *self.layers[-1].out_q)
        return QuantModel(self.layers, spec_in, spec_out)

    # -- helpers --------------------------------------------------------------------------------------
    def _get(self, node, i, optional=False):
        if i >= len(node.input) or not node.input[i]:
            if optional:
                return None
            raise self._error(node, f"input {i} is missing")
        try:
            return self.values[node.input[i]]
        except KeyError:
            raise self._error(node, f"input {node.input[i]!r} is not produced by a supported op") from None

    def _const(self, node, i, optional=False):
        v = self._get(node, i, optional)
        if v is None:
            return None
        if not isinstance(v, _Const):
            raise self._error(node, f"input {i} ({node.input[i]!r}) must be a constant")
        return v.value

    def _error(self, node, message) -> ValueError:
        return ValueError(f"{node.op_type} node {node.name or node.output[0]!r}: {message}")

    def _attrs(self, node) -> dict:
        return {a.name: self.onnx.helper.get_attribute_value(a) for a in node.attribute}

    def _scalar_q(self, node, scale, zp, what) -> tuple[float, int, str]:
        """(scale, zero point) arrays of an activation -> per-tensor (scale, int8-grid zp, dtype)."""
        scale = np.asarray(scale, np.float64)
        dtype = "uint8" if zp is None else np.asarray(zp).dtype.name
        if dtype not in _QUANT_TYPES:
            raise self._error(node, f"{what} type {dtype} is not supported (int8, uint8)")
        zp = np.zeros(1, np.int64) if zp is None else np.asarray(zp, np.int64)
        if scale.size != 1 or zp.size != 1:
            raise self._error(node, f"{what} needs a per-tensor scale and zero point, got {scale.size} scales")
        s = float(scale.reshape(()))
        if not np.isfinite(s) or s <= 0:
            raise self._error(node, f"{what} scale must be positive, got {s}")
        return s, int(zp.reshape(())) - _QUANT_TYPES[dtype], dtype

    def _weights(self, node, q, scale, zp, out_axis, axis=None) -> tuple[np.ndarray, float | np.ndarray]:
        """Quantized weights -> (int8 values with the zero point folded, scale: a float, or one per output
        channel). ``out_axis`` is the weights' output-channel axis; ``axis`` the axis per-axis scales run
        along (DequantizeLinear's attribute; None for QLinear ops, whose per-channel scales are per output
        channel by definition)."""
        q = np.asarray(q)
        if q.dtype.name not in _QUANT_TYPES:
            raise self._error(node, f"weights of type {q.dtype} are not supported (int8, uint8)")
        scale = np.asarray(scale, np.float64).ravel()
        zp = np.zeros(1, np.int64) if zp is None else np.asarray(zp, np.int64).ravel()
        if scale.size != 1 or zp.size != 1:
            if axis is not None and axis != out_axis:
                raise self._error(node, f"per-axis weight scales along axis {axis} of weights {q.shape} are not "
                                        f"supported: the NPU requantizes per output channel (axis {out_axis})")
            n = q.shape[out_axis] if q.ndim > out_axis else None
            if scale.size not in (1, n) or zp.size not in (1, n):
                raise self._error(node, f"weights {q.shape} need one scale and zero point or one per output "
                                        f"channel ({n}), got {scale.size} scales and {zp.size} zero points")
        if np.ptp(zp) > 0:
            raise self._error(node, f"weight zero points differ between output channels ({zp.min()}..{zp.max()}); "
                                    f"the NPU folds one zero point for the whole tensor")
        w = q.astype(np.int64) - int(zp[0])
        if w.min() < -128 or w.max() > 127:
            raise self._error(node, f"weight zero point {int(zp[0])} cannot be folded: w - zp spans "
                                    f"{w.min()}..{w.max()}, beyond int8")
        return w, float(scale[0]) if np.ptp(scale) == 0 else scale

    def _quant_input(self, node, v, scale=None, zp=None) -> _Quant:
        """The activation operand of a GEMM: a pure dequantized tensor (QDQ) or a quantized one (QLinear)."""
        if isinstance(v, _Deq):
            if v.fns:
                raise self._error(node, f"input goes through {'/'.join(n for n, _ in v.fns)} without a "
                                        f"QuantizeLinear; the NPU needs a quantized operand")
            q = v.q
        elif isinstance(v, _Quant):
            q = v
            s, z, _ = self._scalar_q(node, scale, zp, "input")
            if q.src == -1 and np.isnan(q.scale):       # quantized graph input: its grid is given here
                q.scale = s
                self.in_q = (s, z)
            if not np.isclose(q.scale, s, rtol=1e-6) or q.zp != z:
                raise self._error(node, "input scale/zero point differ from the producer's")
        else:
            raise self._error(node, f"activation operand must be quantized (DequantizeLinear or a QLinear "
                                    f"op), got {type(v).__name__.strip('_')}")
        expected = len(self.layers) - 1
        if q.src != expected:
            raise self._error(node, "the graph is not a chain: this layer does not read the previous "
                                    "layer's output (branches and skip connections are not supported)")
        return q

    def _weight_operand(self, node, v, out_axis):
        if isinstance(v, _DeqConst):
            return self._weights(node, v.q, v.scale, v.zp, out_axis, v.axis)
        raise self._error(node, "weights must be a DequantizeLinear of an int8 initializer (float weights "
                                "are not quantized)")

    def _bias(self, node, v, acc_scale, n, beta=1.0) -> np.ndarray:
        """Bias operand (DequantizeLinear of integers with one scale or one per channel, integer constant
        in accumulator units, or float) -> int64 in units of each channel's accumulator (``acc_scale``: a
        float or N values); an integer bias on another grid is rescaled and rounded to the nearest unit."""
        if isinstance(v, _DeqConst):
            b, zp = v.q.astype(np.int64).ravel(), np.asarray(v.zp, np.int64).ravel()
            unit = np.asarray(v.scale, np.float64).ravel() * beta
            if unit.size not in (1, b.size) or zp.size not in (1, b.size):
                raise self._error(node, f"bias has {b.size} values, {unit.size} scales and {zp.size} zero points")
            b = b - zp
        elif isinstance(v, _Const):
            b = np.asarray(v.value).ravel()
            unit = None if np.issubdtype(b.dtype, np.integer) and beta == 1.0 else beta
            b = b.astype(np.int64 if unit is None else np.float64)
        else:
            raise self._error(node, "bias must be a constant")
        if b.size == 1:
            b = np.full(n, b[0])
        if b.shape != (n,):
            raise self._error(node, f"bias must have {n} values, got {b.size}")
        if isinstance(v, _DeqConst):
            return np.where(np.isclose(unit, acc_scale, rtol=1e-6), b, np.rint(b * (unit / acc_scale))).astype(np.int64)
        return b if unit is None else np.rint(b * unit / acc_scale).astype(np.int64)

    # -- layer construction ---------------------------------------------------------------------------
    def _finish(self, node, acc: _Acc, scale, zp) -> _Quant:
        """QuantizeLinear of a GEMM accumulator: emit the layer."""
        s_y, zp_y, dtype = self._scalar_q(node, scale, zp, "output")
        w = acc.w
        bias = np.zeros(w.shape[1], np.int64) if acc.bias is None else acc.bias
        bias = bias - acc.src.zp * w.sum(axis=0)
        if bias.min() < numerics.INT32_MIN or bias.max() > numerics.INT32_MAX:
            raise self._error(node, "bias with the folded activation zero point overflows int32")
        try:
            if np.ndim(acc.acc_scale):          # per-channel weight scales: one requantization per channel
                pairs = [numerics.quantize_multiplier(s / s_y) for s in acc.acc_scale]
                multiplier, shift = np.array([m for m, _ in pairs]), np.array([e for _, e in pairs])
            else:
                multiplier, shift = numerics.quantize_multiplier(acc.acc_scale / s_y)
        except ValueError as error:
            raise self._error(node, str(error)) from None

        def bound(x, default):
            if not np.isfinite(x):
                return default
            return int(np.clip(np.rint(np.float32(x) / np.float32(s_y)) + zp_y, -128, 127))
        qmin, qmax = bound(acc.lo, -128), bound(acc.hi, 127)
        if qmin > qmax:
            raise self._error(node, f"clamp bounds {acc.lo}..{acc.hi} are empty")
        self.layers.append(QLayer(acc.name, acc.op, w, bias, multiplier, shift, zp_y, qmin, qmax, None,
                                  acc.in_shape, (acc.src.scale, acc.src.zp), (s_y, zp_y), acc.conv))
        return _Quant(len(self.layers) - 1, acc.out_shape, s_y, zp_y, dtype)

    def _gemm(self, node, a, w, w_scale, bias, transposed=False, alpha=1.0, beta=1.0, op=None) -> _Acc:
        if len(a.shape) != 1:
            raise self._error(node, f"activation must be 2-D (batch, features), got per-sample shape "
                                    f"{a.shape}; add a Flatten")
        if w.ndim != 2:
            raise self._error(node, f"weights must be 2-D, got shape {w.shape}")
        w = w.T if transposed else w
        if w.shape[0] != a.shape[0]:
            raise self._error(node, f"K mismatch: activation has {a.shape[0]} features, weights {w.shape}")
        acc_scale = a.scale * w_scale * alpha
        b = None if bias is None else self._bias(node, bias, acc_scale, w.shape[1], beta)
        return _Acc(node.name or node.output[0], op or node.op_type, w, b, acc_scale, a, a.shape,
                    (w.shape[1],), None)

    def _conv(self, node, x, w, w_scale, bias, attrs, op=None) -> _Acc:
        if len(x.shape) != 3 or w.ndim != 4:
            raise self._error(node, f"only 2-D convolutions on NCHW tensors are supported, got input "
                                    f"{x.shape} and weights {w.shape}")
        c, h, wd = x.shape
        groups = int(attrs.get("group", 1))
        n_out, cg, kh, kw = w.shape
        if c != cg * groups or n_out % groups:
            raise self._error(node, f"{c} input channels do not match weights {w.shape} with group={groups}")
        kernel = tuple(attrs.get("kernel_shape", (kh, kw)))
        strides = tuple(attrs.get("strides", (1, 1)))
        dil = tuple(attrs.get("dilations", (1, 1)))
        auto_pad = attrs.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        if kernel != (kh, kw) or len(strides) != 2 or len(dil) != 2:
            raise self._error(node, "kernel_shape/strides/dilations must describe a 2-D kernel")
        if auto_pad in ("NOTSET", "VALID"):
            p = tuple(attrs.get("pads", (0, 0, 0, 0))) if auto_pad == "NOTSET" else (0, 0, 0, 0)
            pads = (p[0], p[1], p[2], p[3])
        elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            pads = [0, 0, 0, 0]
            for axis, size in enumerate((h, wd)):
                out = -(-size // strides[axis])
                total = max(0, (out - 1) * strides[axis] + dil[axis] * (kernel[axis] - 1) + 1 - size)
                small, big = total // 2, total - total // 2
                pads[axis], pads[axis + 2] = (small, big) if auto_pad == "SAME_UPPER" else (big, small)
            pads = tuple(pads)
        else:
            raise self._error(node, f"auto_pad={auto_pad!r} is not supported")
        geom = ConvGeom((c, h, wd), kernel, strides, pads, dil, groups)
        if min(geom.out_hw) < 1:
            raise self._error(node, f"the kernel does not fit the {h}x{wd} input")
        # Weight matrix K x N, K ordered (channel, kernel row, kernel column); groups block-diagonal.
        full = np.zeros((c, kh * kw, n_out), np.int64)
        per = n_out // groups
        for g in range(groups):
            block = w[g * per:(g + 1) * per].reshape(per, cg, kh * kw)      # out, in, kk
            full[g * cg:(g + 1) * cg, :, g * per:(g + 1) * per] = block.transpose(1, 2, 0)
        acc_scale = x.scale * w_scale
        b = None if bias is None else self._bias(node, bias, acc_scale, n_out)
        return _Acc(node.name or node.output[0], op or node.op_type, full.reshape(c * kh * kw, n_out), b,
                    acc_scale, x, x.shape, (n_out, *geom.out_hw), geom)

    def _lut(self, node, src: _Quant, fns, scale, zp) -> _Quant:
        """QuantizeLinear of f(DequantizeLinear(q)): fold a table into the layer that produced q."""
        s_y, zp_y, dtype = self._scalar_q(node, scale, zp, "output")
        if not fns and np.isclose(s_y, src.scale, rtol=1e-6) and zp_y == src.zp:
            return replace(src, dtype=dtype)
        if src.src < 0 or src.src != len(self.layers) - 1:
            raise self._error(node, f"{'/'.join(n for n, _ in fns) or 'requantization'} must follow a "
                                    f"GEMM/Conv layer of the chain")
        layer = self.layers[src.src]

        def f(x):
            for _, fn in fns:
                x = fn(x)
            return x
        table = numerics.build_lut(f, src.scale, src.zp, s_y, zp_y)
        if layer.lut is not None:
            layer.lut = table[layer.lut + 128]
        else:
            span = np.arange(layer.qmin, layer.qmax + 1)
            mapped = table[span + 128]
            lo, hi = int(mapped.min()), int(mapped.max())
            if np.array_equal(mapped, np.clip(span, lo, hi)):     # identity with a clamp: no table needed
                layer.qmin, layer.qmax = max(layer.qmin, lo), min(layer.qmax, hi)
            else:
                layer.lut = table
        layer.out_q = (s_y, zp_y)
        return _Quant(src.src, src.shape, s_y, zp_y, dtype)

    # -- ops ------------------------------------------------------------------------------------------
    def run(self):
        for node in self.graph.node:
            if node.domain not in ("", "ai.onnx", "com.microsoft"):
                raise self._error(node, f"domain {node.domain!r} is not supported")
            handler = getattr(self, "_op_" + node.op_type, None)
            if handler is None and node.op_type in UNARY_FUNCTIONS:
                handler = self._unary
            if handler is None and node.op_type in _PASS_THROUGH:
                handler = self._pass
            if handler is None:
                raise self._error(node, "unsupported op")
            outputs = handler(node)
            for name, value in zip(node.output, outputs if isinstance(outputs, tuple) else (outputs,)):
                if name:
                    self.values[name] = value
        return self.model()

    def _pass(self, node):
        return self._get(node, 0)

    def _op_Constant(self, node):
        attr = node.attribute[0]
        if attr.name != "value":
            raise self._error(node, f"Constant with {attr.name!r} is not supported")
        return _Const(self.numpy_helper.to_array(attr.t))

    def _op_QuantizeLinear(self, node):
        v = self._get(node, 0)
        scale, zp = self._const(node, 1), self._const(node, 2, optional=True)
        if isinstance(v, _FloatInput):
            if self.in_q is not None:
                raise self._error(node, "the model input is quantized twice")
            s, z, dtype = self._scalar_q(node, scale, zp, "input")
            self.in_q = (s, z)
            if int(np.prod(v.shape)) != int(np.prod(self.in_shape)):
                raise self._error(node, "shape mismatch")
            return _Quant(-1, v.shape, s, z, dtype)
        if isinstance(v, _Acc):
            return self._finish(node, v, scale, zp)
        if isinstance(v, _Deq):
            return replace(self._lut(node, v.q, v.fns, scale, zp), shape=v.shape)
        raise self._error(node, f"cannot quantize a {type(v).__name__.strip('_')} tensor")

    def _op_DequantizeLinear(self, node):
        v = self._get(node, 0)
        scale, zp = self._const(node, 1), self._const(node, 2, optional=True)
        if isinstance(v, _Const):
            q = np.asarray(v.value)
            attrs = self._attrs(node)
            if attrs.get("block_size", 0):
                raise self._error(node, "blocked quantization (block_size) is not supported")
            axis = int(attrs.get("axis", 1))
            zp = np.zeros(1, q.dtype) if zp is None else np.asarray(zp)
            return _DeqConst(q, np.asarray(scale, np.float64), np.asarray(zp, np.int64), q.dtype.name,
                             axis + q.ndim if axis < 0 else axis)
        if isinstance(v, _Quant):
            s, z, _ = self._scalar_q(node, scale, zp, "input")
            if v.src == -1 and np.isnan(v.scale):
                v.scale = s
                self.in_q = (s, z)
            if not np.isclose(v.scale, s, rtol=1e-6) or v.zp != z:
                raise self._error(node, "scale/zero point differ from the QuantizeLinear that made the tensor")
            return _Deq(v, v.shape)
        raise self._error(node, f"cannot dequantize a {type(v).__name__.strip('_')} tensor")

    def _reshaped(self, node, v, shape):
        if int(np.prod(shape)) != int(np.prod(v.shape)):
            raise self._error(node, f"cannot reshape per-sample {v.shape} to {shape}")
        if isinstance(v, (_FloatInput, _Quant, _Deq)):
            return replace(v, shape=tuple(int(d) for d in shape))
        raise self._error(node, f"cannot reshape a {type(v).__name__.strip('_')} tensor")

    def _op_Flatten(self, node):
        if self._attrs(node).get("axis", 1) != 1:
            raise self._error(node, "only axis=1 (keep the batch axis) is supported")
        v = self._get(node, 0)
        return self._reshaped(node, v, (int(np.prod(getattr(v, "shape", ()))),))

    def _op_Reshape(self, node):
        v = self._get(node, 0)
        target = [int(d) for d in self._const(node, 1)]
        size = int(np.prod(getattr(v, "shape", (0,))))
        if not target or target[0] not in (0, -1) and target[0] != self.in_batch:
            raise self._error(node, f"reshape to {target} must keep the batch axis first")
        rest = target[1:]
        if target[0] == -1 and -1 in rest:
            raise self._error(node, f"reshape to {target}: the batch axis cannot be inferred")
        if -1 in rest:
            known = int(np.prod([d for d in rest if d != -1]))
            rest = [size // known if d == -1 else d for d in rest]
        if 0 in rest:
            raise self._error(node, f"reshape to {target}: 0 beyond the batch axis is not supported")
        return self._reshaped(node, v, tuple(rest))

    def _unary(self, node):
        v = self._get(node, 0)
        attrs = self._attrs(node)
        if isinstance(v, _Acc) and node.op_type == "Relu":
            v.lo = max(v.lo, 0.0)
            return v
        fn = UNARY_FUNCTIONS[node.op_type]
        if isinstance(v, _Deq):
            return replace(v, fns=v.fns + ((node.op_type, lambda x, fn=fn, a=attrs: fn(x, a)),))
        raise self._error(node, f"applies to a {type(v).__name__.strip('_')} tensor; it needs a "
                                f"QuantizeLinear/DequantizeLinear pair on its input")

    def _op_Clip(self, node):
        v = self._get(node, 0)
        attrs = self._attrs(node)
        lo = self._const(node, 1, optional=True)
        hi = self._const(node, 2, optional=True)
        lo = float(attrs.get("min", -np.inf)) if lo is None else float(np.asarray(lo).reshape(()))
        hi = float(attrs.get("max", np.inf)) if hi is None else float(np.asarray(hi).reshape(()))
        if isinstance(v, _Acc):
            v.lo, v.hi = max(v.lo, lo), min(v.hi, hi)
            return v
        if isinstance(v, _Deq):
            return replace(v, fns=v.fns + (("Clip", lambda x: np.clip(x, lo, hi)),))
        raise self._error(node, f"applies to a {type(v).__name__.strip('_')} tensor")

    def _op_MatMul(self, node):
        a = self._quant_input(node, self._get(node, 0))
        w, s_w = self._weight_operand(node, self._get(node, 1), 1)
        return self._gemm(node, a, w, s_w, None)

    def _op_Gemm(self, node):
        attrs = self._attrs(node)
        if attrs.get("transA", 0):
            raise self._error(node, "transA=1 is not supported")
        a = self._quant_input(node, self._get(node, 0))
        transposed = bool(attrs.get("transB", 0))
        w, s_w = self._weight_operand(node, self._get(node, 1), 0 if transposed else 1)
        return self._gemm(node, a, w, s_w, self._get(node, 2, optional=True), transposed,
                          float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0)))

    def _op_Conv(self, node):
        x = self._quant_input(node, self._get(node, 0))
        w, s_w = self._weight_operand(node, self._get(node, 1), 0)
        return self._conv(node, x, w, s_w, self._get(node, 2, optional=True), self._attrs(node))

    def _op_Add(self, node):
        x, y = self._get(node, 0), self._get(node, 1)
        if isinstance(y, _Deq) and isinstance(x, (_Const, _DeqConst)):
            x, y = y, x
        if isinstance(x, _Deq) and isinstance(y, (_Const, _DeqConst)):
            x = self._offset_layer(node, x)
        acc, bias = (x, y) if isinstance(x, _Acc) else (y, x)
        if not isinstance(acc, _Acc) or isinstance(bias, (_Acc, _Deq, _Quant, _FloatInput)):
            raise self._error(node, "only a constant bias added to a MatMul/Conv result is supported "
                                    "(adding two tensors needs a residual/branch, which is not supported)")
        return self._add_bias(node, acc, bias)

    def _add_bias(self, node, acc: _Acc, bias) -> _Acc:
        """Fold a constant (per output channel or scalar) into the accumulator's bias."""
        if acc.bias is not None or acc.lo != -np.inf or acc.hi != np.inf:
            raise self._error(node, "a second bias, or a bias after the activation, is not supported")
        n = acc.w.shape[1]
        shape = np.shape(bias.value if isinstance(bias, _Const) else bias.q)
        per_column = shape[-1:] in ((n,), (1,)) and all(d == 1 for d in shape[:-1]) if acc.conv is None else \
            len(shape) >= 3 and shape[-3] in (n, 1) and all(d == 1 for i, d in enumerate(shape) if i != len(shape) - 3)
        if not per_column and int(np.prod(shape)) != 1:
            raise self._error(node, f"bias of shape {shape} does not broadcast per output channel")
        bias = _Const(np.asarray(bias.value).reshape(-1)) if isinstance(bias, _Const) else \
            replace(bias, q=bias.q.reshape(-1))
        acc.bias = self._bias(node, bias, acc.acc_scale, n)
        return acc

    def _offset_layer(self, node, deq: _Deq) -> _Acc:
        """A constant added to an already quantized tensor (what onnxruntime's quantizer makes of
        MatMul + Add: MatMul -> Q -> DQ -> Add): an identity layer (1x1 conv for NCHW tensors) with
        weights ``OFFSET_GAIN`` * I, so the constant lands in the bias at 1/OFFSET_GAIN of an input LSB
        and the result is requantized once, like onnxruntime's QLinearAdd."""
        q = self._quant_input(node, deq)
        c = q.shape[0]
        w = OFFSET_GAIN * np.eye(c, dtype=np.int64)
        conv = None
        if len(q.shape) == 3:
            conv = ConvGeom(q.shape, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1)
        elif len(q.shape) != 1:
            raise self._error(node, f"cannot add a constant to a per-sample {q.shape} tensor")
        return _Acc(node.name or node.output[0], "Add", w, None, q.scale / OFFSET_GAIN, q, q.shape, q.shape, conv)

    def _qlinear_args(self, node, names):
        return {name: self._const(node, i, optional=True) for i, name in enumerate(names) if i > 0 and name}

    def _op_QLinearMatMul(self, node):
        c = self._qlinear_args(node, ["a", "a_scale", "a_zp", "b", "b_scale", "b_zp", "y_scale", "y_zp"])
        a = self._quant_input(node, self._get(node, 0), c["a_scale"], c["a_zp"])
        w, s_w = self._weights(node, c["b"], c["b_scale"], c["b_zp"], 1)
        return self._finish(node, self._gemm(node, a, w, s_w, None), c["y_scale"], c["y_zp"])

    def _op_QGemm(self, node):
        attrs = self._attrs(node)
        if attrs.get("transA", 0):
            raise self._error(node, "transA=1 is not supported")
        c = self._qlinear_args(node, ["a", "a_scale", "a_zp", "b", "b_scale", "b_zp", "", "y_scale", "y_zp"])
        a = self._quant_input(node, self._get(node, 0), c["a_scale"], c["a_zp"])
        transposed = bool(attrs.get("transB", 0))
        w, s_w = self._weights(node, c["b"], c["b_scale"], c["b_zp"], 0 if transposed else 1)
        bias = self._get(node, 6, optional=True)
        acc = self._gemm(node, a, w, s_w, bias, transposed, float(attrs.get("alpha", 1.0)))
        return acc if c.get("y_scale") is None else self._finish(node, acc, c["y_scale"], c["y_zp"])

    def _op_QLinearConv(self, node):
        c = self._qlinear_args(node, ["x", "x_scale", "x_zp", "w", "w_scale", "w_zp", "y_scale", "y_zp", "b"])
        x = self._quant_input(node, self._get(node, 0), c["x_scale"], c["x_zp"])
        w, s_w = self._weights(node, c["w"], c["w_scale"], c["w_zp"], 0)
        bias = None if c["b"] is None else _Const(np.asarray(c["b"], np.int32))
        acc = self._conv(node, x, w, s_w, bias, self._attrs(node))
        return self._finish(node, acc, c["y_scale"], c["y_zp"])

    def _op_QLinearAdd(self, node):
        a, b = self._get(node, 0), self._get(node, 3)
        scales = [self._const(node, i, optional=True) for i in (1, 2, 4, 5, 6, 7)]
        (sa, za, sb, zb, sy, zy), (x, c) = scales, (a, b)
        if isinstance(a, _Const):
            (sb, zb, sa, za), (x, c) = (sa, za, sb, zb), (b, a)
        if not isinstance(x, _Quant) or not isinstance(c, _Const):
            raise self._error(node, "only a constant added to a quantized tensor is supported (adding two "
                                    "tensors needs a residual/branch, which is not supported)")
        q = self._quant_input(node, x, sa, za)
        acc = self._offset_layer(node, _Deq(q, q.shape))
        bias = _DeqConst(np.asarray(c.value), np.asarray(sb, np.float64),
                         np.zeros(1, np.int64) if zb is None else np.asarray(zb, np.int64), "")
        return self._finish(node, self._add_bias(node, acc, bias), sy, zy)

    def _qlinear_unary(self, node, name, fn):
        c = self._qlinear_args(node, ["x", "x_scale", "x_zp", "y_scale", "y_zp"])
        v = self._get(node, 0)
        if not isinstance(v, _Quant):
            raise self._error(node, "input must be a quantized tensor")
        s, z, _ = self._scalar_q(node, c["x_scale"], c["x_zp"], "input")
        if not np.isclose(v.scale, s, rtol=1e-6) or v.zp != z:
            raise self._error(node, "input scale/zero point differ from the producer's")
        return self._lut(node, v, ((name, fn),), c["y_scale"], c["y_zp"])

    def _op_QLinearSigmoid(self, node):
        return self._qlinear_unary(node, "Sigmoid", lambda x: UNARY_FUNCTIONS["Sigmoid"](x, {}))

    def _op_QLinearLeakyRelu(self, node):
        attrs = self._attrs(node)
        return self._qlinear_unary(node, "LeakyRelu", lambda x: UNARY_FUNCTIONS["LeakyRelu"](x, attrs))


def onnxruntime_session(model: bytes):
    """An onnxruntime CPU session that runs a quantized graph as its operators define it, on every x86
    CPU: graph optimizations off, so QDQ pairs stay DequantizeLinear -> float op -> QuantizeLinear instead
    of being fused into u8 x s8 integer kernels, which on CPUs without VNNI (AVX2 ``vpmaddubsw``)
    saturate pairwise int16 sums and drift by tens of LSBs (measured: 18 LSB on the digits MLP on an
    AVX2-only EPYC). QLinear* operators still run their own integer kernels."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def import_onnx(model) -> QuantModel:
    """A quantized ONNX model (path, bytes or ``onnx.ModelProto``) -> ``QuantModel``.

    Raises ``ValueError`` naming the op and node for anything the NPU cannot run (see the module
    docstring for what is accepted).
    """
    import onnx
    from google.protobuf.message import DecodeError
    try:
        if isinstance(model, (str, os.PathLike)):
            model = onnx.load(os.fspath(model))
        elif isinstance(model, (bytes, bytearray)):
            model = onnx.load_from_string(bytes(model))
    except DecodeError as error:
        raise ValueError(f"not an ONNX model (the file does not parse: {error})") from None
    if not isinstance(model, onnx.ModelProto):
        raise ValueError(f"expected an ONNX model (path, bytes or ModelProto), got {type(model).__name__}")
    return _Importer(model).run()
