"""Import a quantized ONNX model into the graph IR (``compiler.graph``): ``import_onnx_graph``; and into a
``QuantModel`` chain, which the model compiler fuses on chip, when the graph is one: ``import_onnx``.

Accepted forms
--------------
* **QDQ** (what onnxruntime's ``quantize_static(quant_format=QDQ)`` writes): ``QuantizeLinear`` /
  ``DequantizeLinear`` around
  * ``Conv`` (1-D and 2-D, grouped and depthwise, any stride/padding/dilation), ``MatMul`` (2-D
    activations, and 3-D ones: batch x sequence x features, a 1x1 convolution over the sequence),
    ``Gemm``, each with an optional bias ``Add`` and ``Relu``/``Clip`` before its ``QuantizeLinear``;
  * ``BatchNormalization`` that is not folded into a convolution (a 1x1 depthwise layer per channel);
  * ``Add`` of two tensors (residual; TFLite's integer ADD) or of a tensor and a constant (a 1x1
    identity layer whose bias is the constant, on the NPU);
  * ``MaxPool``, ``AveragePool``, ``GlobalAveragePool`` (1-D and 2-D), ``Softmax`` (last axis; in float32
    on the host, as onnxruntime computes it: ``float_softmax``), ``Concat`` (each input
    moved onto the output grid by a table where it differs);
  * ``Flatten``, ``Reshape``, ``Transpose`` (the batch axis stays first);
  * unary functions (``Relu``, ``Clip``, ``Sigmoid``, ``Tanh``, ``LeakyRelu``, ``HardSigmoid``,
    ``HardSwish``, ``Gelu``, ``Elu``, ``Softplus``, ``Erf``, ``Mul``/``Div`` by a scalar constant) followed by ``QuantizeLinear``: a 256-entry table (``lut``), exact against the float
    functions on the 256 input values; a change of grid between ``DequantizeLinear`` and
    ``QuantizeLinear`` is a table too;
  * ``Identity``/``Dropout`` pass through.
* **QLinear ops**: ``QLinearMatMul``, ``QLinearConv``, ``QGemm``, ``QLinearAdd``, ``QLinearAveragePool``,
  ``QLinearGlobalAveragePool``, ``QLinearConcat``, ``QLinearSoftmax`` and ``QLinearSigmoid`` /
  ``QLinearLeakyRelu`` (com.microsoft).
* **Integer ops**: ``MatMulInteger`` and ``ConvInteger`` of a quantized tensor and constant weights, as
  the graph's output: an int32 tensor, the accumulator without requantization (``requant`` ``None`` in
  the IR; on the NPU a raw layer that ``STORE``s its accumulators).
* **Dynamic quantization** (``quantize_dynamic``: ``DynamicQuantizeLinear`` -> ``MatMulInteger`` -> ``Cast`` ->
  ``Mul`` by the scales, with ``Add``, ``Relu``, ``Clip``, ``Reshape``, ``Flatten``, ``Transpose`` in float32
  between): float32 tensors and ``dynamic_matmul`` nodes, whose int32 sums run on the NPU
  (``onnx_dynamic``).
* A model that is one ``QuantizeLinear`` (of the float input) or ``DequantizeLinear`` (of the quantized
  input): an IR graph with no nodes; the input's and output's ``TensorSpec`` quantize and dequantize on
  the host, per tensor or per axis (``TensorSpec.axis``; only such a model may have a per-axis grid on
  an activation, since the NPU's activations are per tensor).

Modules: this one holds the importer's core (inputs and outputs, operands, IR emission, the
quantization of float results, the Q / DQ, MatMul, Gemm and Conv handlers); ``onnx_tensor_ops`` the
shape, elementwise, normalization, pool, softmax and concat handlers; ``onnx_qlinear`` the QOperator
and integer ones; ``onnx_dynamic`` the dynamic quantization ones; ``onnx_values`` the symbolic values; ``onnx_chain`` the chain view.

How the import works: the graph is interpreted symbolically in topological order. Each ONNX tensor is a
constant, the float graph input, a quantized tensor (an int8 tensor of the IR), its dequantized view
(plus pending unary functions), or a float result waiting for its ``QuantizeLinear`` (a GEMM
accumulator, a sum, a pool). Quantizing a float result emits the IR node; the rest only moves metadata.

Layout: the IR is channels-last. An ONNX tensor read by a convolution or pool is stored channels-last
((C, H, W) as (H, W, C), (C, L) as (1, L, C)); any other op that needs ONNX order gets a ``transpose``
node first. The chain view (``import_onnx``) absorbs those layout transposes, since its convolutions
take (C, H, W) themselves.

Contracts
---------
* Activations per tensor; weights per tensor or per output channel (``quantize_static``'s default for
  Conv, ``per_channel=True`` for MatMul/Gemm): the quantization axis must be the output-channel axis
  (Conv weights (O, I, ...): 0; MatMul weights (K, N): 1; Gemm: 0 with ``transB``, else 1); the layer
  then requantizes with one multiplier and shift per output channel, its bias brought to each
  channel's accumulator scale ``s_a * s_w[c]``. Weight zero points (per tensor or per output channel)
  are folded into the weights; where ``w - zp`` leaves int8 (uint8 weights: -255..255), the weights are
  split into the fewest int8 parts that sum to them and the layer reads its input that many times,
  concatenated along the channels (``qlayers.int8_parts``): the accumulator is the same integer sum, so the
  NPU stays exact (depthwise convolutions cannot be split this way and are refused).
* int8 and uint8 activations (uint8 is shifted onto the int8 grid, zero point - 128); a quantized graph
  input takes its grid from the first op that reads it.
* One graph input and one output; anything else raises one ``ValueError`` naming the op and the node.
"""
from __future__ import annotations

import os
from dataclasses import replace

import numpy as np

from opennpu.golden import numerics

from . import tflite_params
from .graph import (ConcatAttrs, ConvAttrs, FloatSoftmaxAttrs, FullyConnectedAttrs, Graph, LayerNormAttrs, LutAttrs,
                    MatMulAttrs, Node, PoolAttrs, QTensor, Requant, TransposeAttrs, Window)
from .onnx_chain import NotAChain, chain_view
from .onnx_dynamic import DYNAMIC_VALUES, DynamicOps
from .onnx_qlinear import QLinearOps
from .onnx_tensor_ops import UNARY_FUNCTIONS, TensorOps
from .onnx_values import (_QUANT_TYPES, OnnxGraph, _Acc, _Const, _Deq, _DeqConst, _Float, _FloatInput, _FloatT,
                          _pads, along, _PerAxisQ, _Q, _unique)
from .qlayers import QuantModel, TensorSpec, int8_parts

__all__ = ["import_onnx", "import_onnx_graph", "OnnxGraph", "NotAChain", "onnxruntime_session", "UNARY_FUNCTIONS"]


_PASS_THROUGH = ("Identity", "Dropout")
#: ops of shape arithmetic, evaluated when all their inputs are constants (``_fold``)
_SHAPE_OPS = ("Gather", "Unsqueeze", "Squeeze", "Cast", "Slice", "Concat", "Range", "ConstantOfShape", "Equal",
              "Where", "Expand", "Floor", "Ceil", "Sqrt", "Neg")


class _Importer(TensorOps, QLinearOps, DynamicOps):
    def __init__(self, model):
        import onnx
        from onnx import numpy_helper
        self.onnx, self.numpy_helper = onnx, numpy_helper
        graph = model.graph
        self.values: dict = {t.name: _Const(numpy_helper.to_array(t)) for t in graph.initializer}
        self.tensors: dict = {}
        self.nodes: list = []
        self.sources: dict = {}
        self.converted: dict = {}
        inputs = [i for i in graph.input if i.name not in self.values]
        if len(inputs) != 1 or len(graph.output) != 1:
            raise ValueError(f"the model must have one input and one output, got {len(inputs)} inputs "
                             f"and {len(graph.output)} outputs")
        self.graph = graph
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
        self._input(inputs[0])
        #: a float32 input that a float op reads (not only QuantizeLinear): the IR input stays float32 and
        #: its QuantizeLinears become ``quantize`` nodes
        self.float_head = self.in_dtype == "float32" and any(
            n.op_type == "LayerNormalization" for n in graph.node if self.in_name in n.input)

    # -- graph input / output -----------------------------------------------------------------------
    def _input(self, value_info):
        t = value_info.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        if len(dims) < 1:
            raise ValueError(f"input {value_info.name!r}: need shape (batch, fixed dims...), got {dims}")
        for i, (d, proto) in enumerate(zip(dims[1:], t.shape.dim[1:]), 1):
            if d is None or d < 1:
                raise ValueError(f"input {value_info.name!r}: dimension {i} ({proto.dim_param or '?'!r}) is dynamic; "
                                 f"only the batch axis may be: export with a fixed size for it (e.g. torch.onnx.export "
                                 f"without it in dynamic_axes) or fix it with onnx.tools.update_model_dims")
        dtype = self.onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name
        if dtype not in ("float32", *_QUANT_TYPES):
            raise ValueError(f"input {value_info.name!r}: element type {dtype} is not supported "
                             f"(float32, int8, uint8)")
        self.in_name, self.in_batch, self.in_dtype = value_info.name, dims[0] or None, dtype
        self.in_shape, self.in_q, self.in_tensor, self.float_input = tuple(dims[1:]), None, None, None
        if dtype == "float32":
            self.values[value_info.name] = _FloatInput(self.in_shape)
        else:       # a quantized input: its grid comes from the first op that reads it with a scale
            self.values[value_info.name] = _Q(value_info.name, self.in_shape, np.nan, None, dtype)

    def _graph_input(self, q: _Q, scale: float, zp: int):
        """The IR input tensor, once its grid is known."""
        q.scale, q.zp = scale, zp
        self.in_q, self.in_tensor = (scale, zp), q.name
        self.tensors[q.name] = QTensor(q.name, q.shape, "int8", (scale,), (zp,))

    def result(self) -> OnnxGraph:
        """The ``OnnxGraph``; a model without ops (one QuantizeLinear or DequantizeLinear) is a graph with
        no nodes whose output is its input."""
        out = self.graph.output[0].name
        v = self.values.get(out)
        if isinstance(v, _Float) and self.in_q is not None:
            v = self._float_tail(v)
        if isinstance(v, _FloatT):            # dynamic quantization, or a float tail: a float32 output
            spec_in = TensorSpec(self.in_name, self.in_shape, self.in_batch, self.in_dtype, *self.in_q)
            graph = Graph(self.tensors, self.nodes, (self.in_tensor,), (v.name,))
            return OnnxGraph(graph, spec_in, TensorSpec(out, v.shape, self.in_batch, "float32", None, None),
                             self.sources)
        if isinstance(v, _Deq) and not v.fns:
            q, dtype = v.q, "float32"
        elif isinstance(v, (_Q, _PerAxisQ)):
            q, dtype = v, v.dtype
        else:
            raise ValueError(f"output {out!r} must be a quantized (or dequantized) tensor, "
                             f"got {type(v).__name__.strip('_') if v is not None else 'nothing'}")
        if self.in_q is None:
            raise ValueError(f"input {self.in_name!r} is never quantized")
        spec_in = TensorSpec(self.in_name, self.in_shape, self.in_batch, self.in_dtype, *self.in_q)
        if isinstance(q, _PerAxisQ):
            spec_out = replace(spec_in, name=out, dtype=dtype)
        else:
            q = self._shaped(self._plain(q), q.shape)
            spec_out = TensorSpec(out, q.shape, self.in_batch, dtype, q.scale, q.zp)
        graph = Graph(self.tensors, self.nodes, (self.in_tensor,), (q.name,))
        return OnnxGraph(graph, spec_in, spec_out, self.sources)

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

    def _name(self, node) -> str:
        return node.name or node.output[0]

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
        """Quantized weights -> (values with the zero point, per tensor or per output channel, folded:
        -255..255, which ``_emit_gemm`` splits into int8 parts where needed; scale: a float, or one per
        output channel). ``out_axis`` is the weights' output-channel axis; ``axis`` the axis per-axis scales run
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
        per_channel = zp.reshape([-1 if i == out_axis else 1 for i in range(q.ndim)]) if zp.size > 1 else zp[0]
        w = q.astype(np.int64) - per_channel
        return w, float(scale[0]) if np.ptp(scale) == 0 else scale

    def _quant_input(self, node, v, scale=None, zp=None) -> _Q:
        """The activation operand of an op: a pure dequantized tensor (QDQ) or a quantized one (QLinear,
        whose grid ``scale`` / ``zp`` must be the producer's)."""
        if isinstance(v, _Deq):
            if v.fns:
                raise self._error(node, f"input goes through {'/'.join(n for n, _ in v.fns)} without a "
                                        f"QuantizeLinear; the NPU needs a quantized operand")
            return v.q
        if isinstance(v, _Q):
            s, z, _ = self._scalar_q(node, scale, zp, "input")
            self._check_grid(node, v, s, z)
            return v
        raise self._error(node, f"activation operand must be quantized (DequantizeLinear or a QLinear "
                                f"op), got {type(v).__name__.strip('_')}")

    def _check_grid(self, node, q: _Q, s: float, z: int):
        if q.dtype == "int32":
            raise self._error(node, f"reads the int32 accumulator {q.name!r} (MatMulInteger/ConvInteger); only "
                                    f"the graph output may be one")
        if q.zp is None:                    # quantized graph input: its grid is given here
            self._graph_input(q, s, z)
        if not np.isclose(q.scale, s, rtol=1e-6) or q.zp != z:
            raise self._error(node, f"scale/zero point {s}/{z} differ from those of the tensor "
                                    f"({q.scale}/{q.zp})")

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
            b = np.where(np.isclose(unit, acc_scale, rtol=1e-6), b, np.rint(b * (unit / acc_scale)))
        elif unit is not None:
            b = np.rint(b * unit / acc_scale)
        b = b.astype(np.int64)
        if b.min() < numerics.INT32_MIN or b.max() > numerics.INT32_MAX:
            raise self._error(node, "bias overflows int32 on the accumulator grid")
        return b

    # -- IR emission ----------------------------------------------------------------------------------
    def _tensor(self, base: str, shape, scale=(1.0,), zp=(0,), dtype="int8", data=None, axis=None) -> str:
        name = _unique(self.tensors, base)
        self.tensors[name] = QTensor(name, tuple(int(d) for d in shape), dtype, tuple(scale), tuple(zp), axis,
                                     None if data is None else np.asarray(data, dtype))
        return name

    def _emit(self, op: str, name: str, source: str, inputs: tuple, out_base: str, shape, scale: float, zp: int,
              attrs=None, dtype="int8") -> str:
        """Append an IR node writing a new activation (int8; layout ops keep their input's type, which
        may be int32); returns its tensor name."""
        if op in ("reshape", "transpose"):
            dtype = self.tensors[inputs[0]].dtype
        out = self._tensor(out_base, shape, (scale,), (zp,), dtype)
        node = Node(op, _unique(self.sources, name), tuple(inputs), out, attrs)
        self.nodes.append(node)
        self.sources[node.name] = source
        return out

    def _ir_shape(self, q: _Q) -> tuple:
        return self.tensors[q.name].shape

    def _layout(self, q: _Q, key: str, build) -> _Q:
        if (q.name, key) not in self.converted:
            self.converted[q.name, key] = build()
        return self.converted[q.name, key]

    def _shaped(self, q: _Q, shape: tuple) -> _Q:
        """A tensor in ONNX order (``cl`` false) whose IR shape is ``shape``: a reshape node if needed."""
        if self._ir_shape(q) == tuple(shape):
            return q
        return self._layout(q, f"reshape{shape}", lambda: replace(q, name=self._emit(
            "reshape", f"{q.name}:reshape", "Reshape", (q.name,), f"{q.name}:reshape", shape, q.scale, q.zp)))

    def _plain(self, q: _Q) -> _Q:
        """``q`` in ONNX order: a transpose from channels-last if it is stored so."""
        if not q.cl:
            return q

        def build():
            h, w, c = self._ir_shape(q)
            name = self._emit("transpose", f"{q.name}:nchw", "Transpose", (q.name,), f"{q.name}:nchw", (c, h, w),
                              q.scale, q.zp, TransposeAttrs((2, 0, 1)))
            return replace(q, name=name, cl=False)
        return self._layout(q, "nchw", build)

    def _channels_last(self, node, q: _Q) -> _Q:
        """``q`` (ONNX (C, H, W) or (C, L)) stored channels-last, (H, W, C) or (1, L, C)."""
        if q.cl:
            return q
        if len(q.shape) not in (2, 3):
            raise self._error(node, f"needs a (C, H, W) or (C, L) tensor per sample, got {q.shape}")
        c, *spatial = q.shape
        chw = (c, *([1] * (3 - len(q.shape))), *spatial)

        def build():
            src = self._shaped(q, chw)
            name = self._emit("transpose", f"{q.name}:nhwc", "Transpose", (src.name,), f"{q.name}:nhwc",
                              (*chw[1:], c), q.scale, q.zp, TransposeAttrs((1, 2, 0)))
            return replace(q, name=name, cl=True)
        return self._layout(q, "nhwc", build)

    def _requant(self, node, acc_scale, s_y: float, zp_y: int, lo: float, hi: float) -> Requant:
        try:
            if np.ndim(acc_scale):          # per-channel weight scales: one requantization per channel
                pairs = [numerics.quantize_multiplier(s / s_y) for s in acc_scale]
            else:
                pairs = [numerics.quantize_multiplier(acc_scale / s_y)]
        except ValueError as error:
            raise self._error(node, str(error)) from None
        qmin, qmax = self._bounds(node, lo, hi, s_y, zp_y)
        return Requant(tuple(m for m, _ in pairs), tuple(e for _, e in pairs), zp_y, qmin, qmax)

    def _bounds(self, node, lo: float, hi: float, s_y: float, zp_y: int) -> tuple[int, int]:
        def bound(x, default):
            if not np.isfinite(x):
                return default
            return int(np.clip(np.rint(np.float32(x) / np.float32(s_y)) + zp_y, -128, 127))
        qmin, qmax = bound(lo, -128), bound(hi, 127)
        if qmin > qmax:
            raise self._error(node, f"clamp bounds {lo}..{hi} are empty")
        return qmin, qmax

    # -- quantization of float results ----------------------------------------------------------------
    def _finish(self, node, acc: _Acc, scale, zp) -> _Q:
        """QuantizeLinear of a GEMM accumulator: emit the conv / fully connected node."""
        return self._emit_gemm(node, acc, *self._scalar_q(node, scale, zp, "output"))

    def _split_input(self, node, acc: _Acc) -> _Acc:
        """A layer whose weights leave int8 (folded uint8 zero points) -> int8 weight parts side by side
        along K and the input concatenated with itself as often (a ``concatenation`` node), same sum."""
        parts = int8_parts(acc.w)
        if len(parts) == 1:
            return acc
        if acc.op == "depthwise_conv2d":
            raise self._error(node, f"depthwise weights span {acc.w.min()}..{acc.w.max()} after folding the zero "
                                    f"point, beyond int8, and a depthwise layer cannot read its input twice")
        x = acc.x if acc.op == "conv2d" else self._shaped(acc.x, (int(np.prod(self._ir_shape(acc.x))),))
        shape = list(self._ir_shape(x))
        shape[-1] *= len(parts)
        name = self._emit("concatenation", f"{acc.name}:repeat", acc.source, (x.name,) * len(parts),
                          f"{acc.name}:repeat", shape, x.scale, x.zp, ConcatAttrs(len(shape) - 1))
        return replace(acc, x=replace(x, name=name), w=np.concatenate(parts, axis=-1))

    def _emit_gemm(self, node, acc: _Acc, s_y: float, zp_y: int, dtype: str) -> _Q:
        """Emit the conv / fully connected node of an accumulator; ``dtype`` "int32": the raw accumulator
        (no requantization; ``s_y`` / ``zp_y`` are then 1.0 / 0, the int32 tensor's nominal grid)."""
        acc = self._split_input(node, acc)
        n = acc.w.shape[0] if acc.op != "depthwise_conv2d" else acc.w.shape[-1]
        w_scale = np.broadcast_to(np.asarray(acc.acc_scale, np.float64) / acc.x.scale, (n,))
        per_channel = bool(np.ndim(acc.acc_scale))
        w = self._tensor(f"{acc.name}:weights", acc.w.shape, tuple(w_scale) if per_channel else (w_scale[0],),
                         (0,) * (n if per_channel else 1), "int8", acc.w, (3 if acc.op == "depthwise_conv2d" else 0)
                         if per_channel else None)
        b = None if acc.bias is None else self._tensor(f"{acc.name}:bias", (n,), tuple(w_scale * acc.x.scale),
                                                       (0,), "int32", acc.bias)
        raw = dtype == "int32"
        requant = None if raw else self._requant(node, acc.acc_scale, s_y, zp_y, acc.lo, acc.hi)
        attrs = FullyConnectedAttrs(acc.x.zp, requant) if acc.op == "fully_connected" else \
            ConvAttrs(acc.window, acc.x.zp, requant)
        out = self._emit(acc.op, acc.name, acc.source, (acc.x.name, w, b), node.output[0], acc.ir_shape, s_y, zp_y,
                         attrs, "int32" if raw else "int8")
        return _Q(out, acc.shape, s_y, zp_y, dtype, acc.cl)

    def _table(self, node, q: _Q, fns, s_y: float, zp_y: int, dtype: str, lo=-np.inf, hi=np.inf, out=None) -> _Q:
        """QuantizeLinear of f(DequantizeLinear(q)) (``fns``, then a clamp): a ``lut`` node (writing a tensor
        named ``out``, default the node's output), or ``q`` itself when nothing changes."""
        if not fns and np.isclose(s_y, q.scale, rtol=1e-6) and zp_y == q.zp and lo == -np.inf and hi == np.inf:
            return replace(q, dtype=dtype)

        def f(x):
            for _, fn in fns:
                x = fn(x)
            return np.clip(x, lo, hi)
        table = numerics.build_lut(f, q.scale, q.zp, s_y, zp_y)
        names = "/".join(n for n, _ in fns) or "requantize"
        out = self._emit("lut", f"{self._name(node)}:{names}", names, (q.name,), out or node.output[0],
                         self._ir_shape(q), s_y, zp_y, LutAttrs(tuple(int(v) for v in table)))
        return replace(q, name=out, scale=s_y, zp=zp_y, dtype=dtype)

    def _finish_float(self, node, v: _Float, scale, zp) -> _Q:
        """QuantizeLinear of an add, pool or softmax result: emit its node(s)."""
        return self._emit_float(node, v, *self._scalar_q(node, scale, zp, "output"))

    def _emit_float(self, node, v: _Float, s_y: float, zp_y: int, dtype: str) -> _Q:
        x = v.inputs[0]
        if v.kind == "concat":          # each input onto the output grid (a table where it differs), side by side
            parts = [self._table(node, q, (), s_y, zp_y, dtype, v.lo, v.hi, f"{v.name}:in{i}")
                     for i, q in enumerate(v.inputs)]
            cl = any(q.cl for q in parts) and len(v.shape) in (2, 3)
            parts = [self._channels_last(node, q) if cl else self._shaped(self._plain(q), q.shape) for q in parts]
            axis = ((2, 0, 1) if len(v.shape) == 3 else (2, 1))[v.axis] if cl else v.axis
            shape = list(self._ir_shape(parts[0]))
            shape[axis] = sum(self._ir_shape(q)[axis] for q in parts)
            out = self._emit("concatenation", v.name, v.source, tuple(q.name for q in parts), node.output[0], shape,
                             s_y, zp_y, ConcatAttrs(axis))
            return _Q(out, v.shape, s_y, zp_y, dtype, cl)
        if v.kind in ("add", "mul"):       # TFLite's integer ADD / MUL, clamped to the pending bounds
            a, b = v.inputs
            prepare = tflite_params.add_attrs if v.kind == "add" else tflite_params.mul_attrs
            try:
                attrs = prepare(((a.scale, a.zp), (b.scale, b.zp)), (s_y, zp_y), 0)
            except ValueError as error:
                raise self._error(node, str(error)) from None
            qmin, qmax = self._bounds(node, v.lo, v.hi, s_y, zp_y)
            out = self._emit(v.kind, v.name, v.source, (a.name, b.name), node.output[0],
                             np.broadcast_shapes(self._ir_shape(a), self._ir_shape(b)), s_y, zp_y,
                             replace(attrs, qmin=qmin, qmax=qmax))
            return _Q(out, v.shape, s_y, zp_y, dtype, a.cl)
        if v.kind == "layer_norm":
            gamma, beta, eps = v.params
            attrs = LayerNormAttrs((x.scale, x.zp), gamma, beta, eps, (s_y, zp_y))
            out = self._emit("layer_norm", v.name, v.source, (x.name,), node.output[0], self._ir_shape(x), s_y,
                             zp_y, attrs)
            return _Q(out, v.shape, s_y, zp_y, dtype)
        if v.kind == "matmul":
            a, b = v.inputs
            attrs = MatMulAttrs((a.zp, b.zp), self._requant(node, a.scale * b.scale, s_y, zp_y, v.lo, v.hi))
            out = self._emit("matmul", v.name, v.source, (a.name, b.name), node.output[0], v.shape, s_y, zp_y, attrs)
            return _Q(out, v.shape, s_y, zp_y, dtype)
        if v.kind == "softmax":         # float32, as onnxruntime computes it between DQ and Q
            out = self._emit("float_softmax", v.name, v.source, (x.name,), node.output[0], self._ir_shape(x), s_y,
                             zp_y, FloatSoftmaxAttrs((x.scale, x.zp), (s_y, zp_y)))
            return _Q(out, v.shape, s_y, zp_y, dtype)
        h, w, c = self._ir_shape(x)
        ho, wo = v.window.out_hw(h, w)
        same = np.isclose(s_y, x.scale, rtol=1e-6) and zp_y == x.zp
        taps = v.window.kernel[0] * v.window.kernel[1]
        uniform = v.count_pads or not any(v.window.pads)
        if v.kind == "avg_pool" and uniform and not (same and not any(v.window.pads)):
            # the mean as a depthwise convolution with unit weights: one rounding, the padding adds zero
            ones = np.ones((1, *v.window.kernel, c), np.int64)
            acc = _Acc(v.name, "depthwise_conv2d", v.source, x, ones, None, x.scale / taps, v.window, v.shape,
                       (ho, wo, c), True, v.lo, v.hi)
            return self._emit_gemm(node, acc, s_y, zp_y, dtype)
        op = "max_pool2d" if v.kind == "max_pool" else "average_pool2d"
        qmin, qmax = self._bounds(node, v.lo, v.hi, x.scale, x.zp) if same else (-128, 127)
        pooled = _Q(self._emit(op, v.name, v.source, (x.name,), node.output[0] if same else f"{v.name}:pooled",
                               (ho, wo, c), x.scale, x.zp, PoolAttrs(v.window, qmin, qmax)), v.shape, x.scale, x.zp,
                    dtype, True)
        return pooled if same else self._table(node, pooled, (), s_y, zp_y, dtype, v.lo, v.hi)

    # -- ops ------------------------------------------------------------------------------------------
    def _handler(self, node):
        if node.domain not in ("", "ai.onnx", "com.microsoft"):
            return None
        if any(isinstance(self.values.get(i), DYNAMIC_VALUES) for i in node.input):
            return self._dynamic_handler(node)
        if node.op_type in UNARY_FUNCTIONS:
            return self._unary
        if node.op_type in _PASS_THROUGH:
            return self._pass
        return getattr(self, "_op_" + node.op_type, None)

    def run(self) -> OnnxGraph:
        missing: dict = {}
        for node in self.graph.node:
            if self._handler(node) is None and node.op_type not in _SHAPE_OPS:
                key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
                missing[key] = missing.get(key, 0) + 1
        for node in self.graph.node:
            if self._foldable(node):
                self._fold(node)
                continue
            handler = self._handler(node)
            if handler is None:
                needs = ", ".join(f"{op} ({n} node{'s' * (n > 1)})" for op, n in sorted(missing.items()))
                raise self._error(node, f"unsupported op; the model needs these unsupported ops: {needs}")
            outputs = handler(node)
            for name, value in zip(node.output, outputs if isinstance(outputs, tuple) else (outputs,)):
                if name:
                    self.values[name] = value
        return self.result()

    def _foldable(self, node) -> bool:
        """A node of shape arithmetic: every input a constant (not a Q/DQ pair, which the handlers read)."""
        return node.domain in ("", "ai.onnx") and node.op_type not in ("Constant", "QuantizeLinear",
                                                                        "DequantizeLinear") and \
            bool(node.input) and all(isinstance(self.values.get(i), _Const) for i in node.input if i)

    def _fold(self, node):
        """Evaluate a node of constants with onnx's reference evaluator."""
        from onnx.reference import ReferenceEvaluator
        inputs = [i for i in node.input if i]
        feeds = {i: self.values[i].value for i in inputs}
        model = self.onnx.helper.make_model(self.onnx.helper.make_graph(
            [node], "fold", [self.onnx.helper.make_tensor_value_info(i, 0, None) for i in inputs],
            [self.onnx.helper.make_tensor_value_info(o, 0, None) for o in node.output if o]),
            opset_imports=[self.onnx.helper.make_opsetid("", self.opset)])
        try:
            results = ReferenceEvaluator(model).run(None, feeds)
        except Exception as error:
            raise self._error(node, f"cannot evaluate it on constants ({type(error).__name__}: {error})") from None
        for name, value in zip([o for o in node.output if o], results):
            self.values[name] = _Const(np.asarray(value))

    def _op_Shape(self, node):
        """The shape of an activation, the batch axis as 0 (which Reshape reads as "keep this axis")."""
        v = self._get(node, 0)
        shape = getattr(v, "shape", None)
        if shape is None or isinstance(v, _Const):
            raise self._error(node, f"the shape of a {type(v).__name__.strip('_')} is not known")
        attrs = self._attrs(node)
        full = np.array([0, *shape], np.int64)
        return _Const(full[attrs.get("start", 0):attrs.get("end", len(full))])

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
        output_dtype = self._attrs(node).get("output_dtype", 0)
        if zp is None and output_dtype:     # no zero point: the type comes from the attribute (else uint8)
            zp = np.zeros(1, self.onnx.helper.tensor_dtype_to_np_dtype(output_dtype))
        if isinstance(v, _FloatInput) and self.float_head:
            return self._dyn_QuantizeLinear(node)
        if isinstance(v, _FloatInput):
            if self.in_q is not None:
                raise self._error(node, "the model input is quantized twice")
            if np.size(scale) > 1:
                dtype = "uint8" if zp is None else np.asarray(zp).dtype.name
                return self._per_axis_input(node, v.shape, scale, zp, dtype)
            s, z, dtype = self._scalar_q(node, scale, zp, "input")
            q = _Q(node.output[0], v.shape, s, z, dtype)
            self._graph_input(q, s, z)
            return q
        if isinstance(v, (_Const, _DeqConst)):
            return self._quantize_const(node, v, scale, zp)
        if isinstance(v, _Acc):
            return self._finish(node, v, scale, zp)
        if isinstance(v, _Float):
            return self._finish_float(node, v, scale, zp)
        if isinstance(v, _Deq):
            return self._table(node, v.q, v.fns, *self._scalar_q(node, scale, zp, "output"))
        raise self._error(node, f"cannot quantize a {type(v).__name__.strip('_')} tensor")

    def _quantize_const(self, node, v, scale, zp) -> _Const:
        """QuantizeLinear of a constant (or of a dequantized one), as ONNX defines it: x / scale rounded half
        to even, plus the zero point, saturated to the zero point's type; per-axis along ``axis``."""
        x = np.asarray(v.value, np.float32) if isinstance(v, _Const) else v.real()
        dtype = np.dtype("uint8") if zp is None else np.asarray(zp).dtype
        if dtype.name not in _QUANT_TYPES:
            raise self._error(node, f"quantizing a constant to {dtype} is not supported (int8, uint8)")
        axis = int(self._attrs(node).get("axis", 1))
        axis = axis + x.ndim if axis < 0 else axis
        s = along(np.asarray(scale, np.float32), axis, x.ndim)
        z = along(np.zeros(1) if zp is None else np.asarray(zp, np.int64), axis, x.ndim)
        info = np.iinfo(dtype)
        return _Const(np.clip(np.rint(x / s) + z, info.min, info.max).astype(dtype))

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
        if isinstance(v, _Q) and v.zp is None and np.size(scale) > 1:
            return _Deq(self._per_axis_input(node, v.shape, scale, zp, v.dtype))
        if isinstance(v, _Q):
            s, z, _ = self._scalar_q(node, scale, zp, "input")
            self._check_grid(node, v, s, z)
            return _Deq(v)
        raise self._error(node, f"cannot dequantize a {type(v).__name__.strip('_')} tensor")

    def _per_axis_input(self, node, shape: tuple, scale, zp, dtype: str) -> _PerAxisQ:
        """The graph input on the per-axis grid of this QuantizeLinear / DequantizeLinear (``axis``, one
        scale and zero point per index): the grid of the graph input's and output's ``TensorSpec``; the NPU's
        activations are per tensor, so no op may read the tensor (only a model that is this node alone)."""
        attrs = self._attrs(node)
        if attrs.get("block_size", 0):
            raise self._error(node, "blocked quantization (block_size) is not supported")
        axis = int(attrs.get("axis", 1))
        axis += len(shape) + 1 if axis < 0 else 0
        if not 1 <= axis <= len(shape):
            raise self._error(node, f"per-axis grid along axis {axis} of (batch, {shape}): only along a "
                                    f"per-sample axis, not the batch axis")
        if dtype not in _QUANT_TYPES or zp is not None and np.asarray(zp).dtype.name != dtype:
            raise self._error(node, f"type {dtype} (zero point {None if zp is None else np.asarray(zp).dtype}) is "
                                    f"not supported (int8, uint8)")
        n = shape[axis - 1]
        scale = np.asarray(scale, np.float64).ravel()
        zp = np.zeros(1, np.int64) if zp is None else np.asarray(zp, np.int64).ravel()
        if scale.size != n or zp.size not in (1, n) or not np.all(np.isfinite(scale) & (scale > 0)):
            raise self._error(node, f"needs {n} positive scales and 1 or {n} zero points along axis {axis}, got "
                                    f"{scale.size} and {zp.size}")
        scales = tuple(float(s) for s in scale)
        zps = tuple(int(z) - _QUANT_TYPES[dtype] for z in np.broadcast_to(zp, (n,)))
        name = self.in_name
        self.in_q, self.in_tensor = (scales, zps, axis - 1), name
        self.tensors[name] = QTensor(name, shape, "int8", scales, zps, axis - 1)
        return _PerAxisQ(name, shape, dtype)

    def _gemm(self, node, a: _Q, w, w_scale, bias, transposed=False, alpha=1.0, beta=1.0, source=None) -> _Acc:
        """MatMul/Gemm of an activation (K,) -> a fully connected node, or (S, K) -> a 1x1 convolution
        over the sequence (IR (1, S, K))."""
        if w.ndim != 2:
            raise self._error(node, f"weights must be 2-D, got shape {w.shape}")
        w = w.T if transposed else w
        if a.shape[-1] != w.shape[0] or len(a.shape) not in (1, 2):
            raise self._error(node, f"activation {a.shape} per sample does not match weights {w.shape} (the "
                                    f"activation must be (K,) or (sequence, K))")
        acc_scale = a.scale * w_scale * alpha
        b = None if bias is None else self._bias(node, bias, acc_scale, w.shape[1], beta)
        name, source = self._name(node), source or node.op_type
        x = self._plain(a)
        if len(a.shape) == 1:
            return _Acc(name, "fully_connected", source, x, w.T, b, acc_scale, None, (w.shape[1],), (w.shape[1],),
                        False)
        s = a.shape[0]
        window = Window((1, 1), (1, 1), (1, 1), (0, 0, 0, 0))
        return _Acc(name, "conv2d", source, self._shaped(x, (1, *a.shape)), w.T.reshape(w.shape[1], 1, 1, -1), b,
                    acc_scale, window, (s, w.shape[1]), (1, s, w.shape[1]), False)

    def _window(self, node, attrs, spatial: tuple, kernel: tuple) -> Window:
        n = len(spatial)
        strides = tuple(attrs.get("strides", (1,) * n))
        dil = tuple(attrs.get("dilations", (1,) * n))
        if len(kernel) != n or len(strides) != n or len(dil) != n:
            raise self._error(node, f"kernel_shape/strides/dilations must describe a {n}-D window")
        try:
            pads = _pads(attrs, spatial, kernel, strides, dil)
        except ValueError as error:
            raise self._error(node, str(error)) from None
        if n == 1:
            return Window((1, kernel[0]), (1, strides[0]), (1, dil[0]), (0, pads[0], 0, pads[1]))
        return Window(kernel, strides, dil, (pads[0], pads[1], pads[2], pads[3]))

    def _conv(self, node, x: _Q, w, w_scale, bias, attrs, source=None) -> _Acc:
        if len(x.shape) not in (2, 3) or w.ndim != len(x.shape) + 1:
            raise self._error(node, f"only 1-D and 2-D convolutions are supported, got input {x.shape} and "
                                    f"weights {w.shape}")
        c, *spatial = x.shape
        groups = int(attrs.get("group", 1))
        n_out, cg, *kernel = w.shape
        if c != cg * groups or n_out % groups:
            raise self._error(node, f"{c} input channels do not match weights {w.shape} with group={groups}")
        if tuple(attrs.get("kernel_shape", kernel)) != tuple(kernel):
            raise self._error(node, f"kernel_shape {attrs['kernel_shape']} differs from the weights {w.shape}")
        window = self._window(node, attrs, tuple(spatial), tuple(kernel))
        xc = self._channels_last(node, x)
        h, wd, _ = self._ir_shape(xc)
        ho, wo = window.out_hw(h, wd)
        if min(ho, wo) < 1:
            raise self._error(node, f"the kernel does not fit the {spatial} input")
        kh, kw = window.kernel
        w = w.reshape(n_out, cg, kh, kw)
        if groups == 1:
            op, weights = "conv2d", w.transpose(0, 2, 3, 1)
        elif groups == c and cg == 1:      # depthwise: output channel o reads input channel o // (n_out / c)
            op, weights = "depthwise_conv2d", w[:, 0].transpose(1, 2, 0)[None]
        else:                               # grouped: a dense convolution with block-diagonal weights
            op, weights = "conv2d", np.zeros((n_out, kh, kw, c), np.int64)
            per = n_out // groups
            for g in range(groups):
                weights[g * per:(g + 1) * per, :, :, g * cg:(g + 1) * cg] = w[g * per:(g + 1) * per].transpose(0, 2, 3, 1)
        acc_scale = x.scale * w_scale
        b = None if bias is None else self._bias(node, bias, acc_scale, n_out)
        shape = (n_out, ho, wo) if len(x.shape) == 3 else (n_out, wo)
        return _Acc(self._name(node), op, source or node.op_type, xc, weights, b, acc_scale, window, shape,
                    (ho, wo, n_out), True)

    def _op_MatMul(self, node):
        a = self._quant_input(node, self._get(node, 0))
        b = self._get(node, 1)
        if isinstance(b, _Deq):         # activation x activation (attention)
            return self._product(node, a, self._quant_input(node, b))
        w, s_w = self._weight_operand(node, b, 1)
        return self._gemm(node, a, w, s_w, None)

    def _product(self, node, a: _Q, b: _Q, source="MatMul") -> _Float:
        if len(a.shape) < 2 or len(a.shape) != len(b.shape) or a.shape[:-2] != b.shape[:-2] or \
                a.shape[-1] != b.shape[-2]:
            raise self._error(node, f"activations {a.shape} and {b.shape} per sample do not multiply (same rank, "
                                    f"(..., M, K) x (..., K, N))")
        a, b = self._shaped(self._plain(a), a.shape), self._shaped(self._plain(b), b.shape)
        return _Float("matmul", self._name(node), source, (a, b), (*a.shape[:-1], b.shape[-1]))

    def _op_Gemm(self, node):
        attrs = self._attrs(node)
        if attrs.get("transA", 0):
            raise self._error(node, "transA=1 is not supported")
        a = self._quant_input(node, self._get(node, 0))
        if len(a.shape) != 1:
            raise self._error(node, f"Gemm needs a 2-D (batch, features) activation, got per-sample {a.shape}; "
                                    f"add a Flatten")
        transposed = bool(attrs.get("transB", 0))
        w, s_w = self._weight_operand(node, self._get(node, 1), 0 if transposed else 1)
        return self._gemm(node, a, w, s_w, self._get(node, 2, optional=True), transposed,
                          float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0)))

    def _op_Conv(self, node):
        x = self._quant_input(node, self._get(node, 0))
        w, s_w = self._weight_operand(node, self._get(node, 1), 0)
        return self._conv(node, x, w, s_w, self._get(node, 2, optional=True), self._attrs(node))

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


def import_onnx_graph(model) -> OnnxGraph:
    """A quantized ONNX model (path, bytes or ``onnx.ModelProto``) -> ``OnnxGraph``.

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


def import_onnx(model) -> QuantModel:
    """A quantized ONNX model that is a chain of layers -> ``QuantModel`` (``NotAChain`` for any other
    valid graph: run it with ``import_onnx_graph``)."""
    return chain_view(import_onnx_graph(model))
