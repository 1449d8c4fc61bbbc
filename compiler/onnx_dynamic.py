"""Dynamic quantization handlers of the ONNX importer (``onnx_import._Importer`` mixes them in): what
onnxruntime's ``quantize_dynamic`` writes for ``MatMul`` (and ``Gemm``, which it turns into one):

    x (float32) -> DynamicQuantizeLinear -> (x_q uint8, x_scale, x_zp)
    MatMulInteger(x_q, W_q, x_zp, W_zp) -> Cast(float32) -> Mul(Mul(x_scale, W_scale)) [-> Add(bias)]

The grid of ``x_q`` is computed from the values at run time, so the graph between two dynamic
quantizations is float32: the importer emits one ``dynamic_matmul`` node per MatMulInteger / Cast / Mul
group (weights: a constant with its scale and zero point; or a second dynamically quantized activation,
attention's form) and ``float_add`` / ``float_clip`` / ``reshape`` / ``transpose`` nodes for the float ops
between them (``Add``, ``Relu``, ``Clip``, ``Reshape``, ``Flatten``, ``Transpose``), exactly as ONNX defines
them. A ``dynamic_matmul`` with constant weights runs its int32 sums on the NPU (``graph_npu``: a raw
layer for the run's grid), its quantization and float32 epilogue on the host; the float ops run on the
host (``host_kernels``). Any other op on a float32 tensor is refused, naming the op and the node;
``ConvInteger`` of a dynamic input is refused too (``quantize_static`` is the form for CNNs).

The same float32 tensors carry the float head and tail of a statically quantized model whose first or
last ``LayerNormalization`` is not quantized (onnxruntime's QOperator form): the float input normalized
(``float_layer_norm``) and then quantized (``quantize``), and a last LayerNormalization of a quantized
tensor that is the graph output (``dequantize``, ``float_layer_norm``).
"""
from __future__ import annotations

import numpy as np

from .graph import FloatClipAttrs, FloatLayerNormAttrs, TransposeAttrs
from .onnx_values import _Const, _DynAcc, _DynQ, _Float, _FloatInput, _FloatT, _Q

__all__ = ["DynamicOps", "DYNAMIC_VALUES"]

#: the symbolic values of a dynamically quantized graph (a node reading one goes to ``_dyn_<Type>``)
DYNAMIC_VALUES = (_FloatT, _DynQ, _DynAcc)
_DYNAMIC_OPS = ("MatMulInteger", "Cast", "Mul", "Add", "Relu", "Clip", "Reshape", "Flatten", "Transpose", "Shape",
                "DynamicQuantizeLinear", "LayerNormalization", "QuantizeLinear")


class DynamicOps:
    """Handlers ``_op_DynamicQuantizeLinear`` and ``_dyn_<Type>`` (ops reading a ``DYNAMIC_VALUES`` value)."""

    def _dynamic_handler(self, node):
        if node.op_type == "ConvInteger":
            def refuse_conv(node):
                raise self._error(node, "ConvInteger of a dynamically quantized input is not supported; quantize "
                                        "CNNs with quantize_static (QDQ), which the NPU runs")
            return refuse_conv
        if node.op_type not in _DYNAMIC_OPS:
            def refuse(node):
                raise self._error(node, f"reads a dynamically quantized (float32) tensor; between dynamic "
                                        f"quantizations only {', '.join(_DYNAMIC_OPS)} are supported")
            return refuse
        return getattr(self, "_dyn_" + node.op_type, None) or getattr(self, "_op_" + node.op_type)

    def _float_operand(self, node, v) -> _FloatT:
        """A float32 operand: a float IR tensor, or the float graph input (its IR tensor made here)."""
        if isinstance(v, _FloatT):
            return v
        if isinstance(v, _FloatInput):
            if self.in_q is not None and self.float_input is None:
                raise self._error(node, "the model input is quantized both statically and dynamically")
            if self.float_input is None:
                name = self._tensor(self.in_name, v.shape, dtype="float32")
                self.float_input, self.in_q, self.in_tensor = _FloatT(name, v.shape), (None, None), name
            if self.float_input.shape != v.shape:
                return self._float_emit("reshape", node, (self.float_input.name,), v.shape)
            return self.float_input
        raise self._error(node, f"needs a float32 tensor, got {type(v).__name__.strip('_')}")

    def _float_emit(self, op, node, inputs, shape, attrs=None) -> _FloatT:
        name = self._emit(op, self._name(node), node.op_type, inputs, node.output[0], shape, 1.0, 0, attrs,
                          "float32")
        return _FloatT(name, tuple(shape))

    def _op_DynamicQuantizeLinear(self, node):
        x = self._float_operand(node, self._get(node, 0))
        return _DynQ(x, "y"), _DynQ(x, "scale"), _DynQ(x, "zp")

    def _dyn_part(self, node, i, part, of=None) -> _DynQ:
        v = self._get(node, i)
        if not isinstance(v, _DynQ) or v.part != part or of is not None and v.x is not of:
            raise self._error(node, f"input {i} must be the {part} of "
                                    f"{'the same' if of is not None else 'a'} DynamicQuantizeLinear")
        return v

    def _dyn_MatMulInteger(self, node):
        a = self._dyn_part(node, 0, "y")
        self._dyn_part(node, 2, "zp", a.x)
        b = self._get(node, 1)
        if isinstance(b, _DynQ):
            self._dyn_part(node, 1, "y")
            self._dyn_part(node, 3, "zp", b.x)
            if len(a.x.shape) < 2 or a.x.shape[:-2] != b.x.shape[:-2] or len(a.x.shape) != len(b.x.shape) \
                    or a.x.shape[-1] != b.x.shape[-2]:
                raise self._error(node, f"activations {a.x.shape} and {b.x.shape} per sample do not multiply "
                                        f"(same rank, (..., M, K) x (..., K, N))")
            return _DynAcc(self._name(node), a.x, b.x, (*a.x.shape[:-1], b.x.shape[-1]))
        w = np.asarray(self._shared_matrix(node, self._const(node, 1)))
        zp = self._const(node, 3, optional=True)
        zp = np.zeros(1, w.dtype) if zp is None else np.asarray(zp)
        if w.ndim != 2 or w.dtype.name not in ("int8", "uint8") or zp.dtype != w.dtype or zp.size not in (1, w.shape[1]):
            raise self._error(node, f"weights must be a (K, N) int8/uint8 constant with one zero point of their type "
                                    f"or one per column, got {w.dtype} {w.shape} and {zp.size} {zp.dtype} zero points")
        if a.x.shape[-1] != w.shape[0]:
            raise self._error(node, f"input {a.x.shape} per sample does not multiply weights {w.shape}")
        return _DynAcc(self._name(node), a.x, (w, zp.ravel()), (*a.x.shape[:-1], w.shape[1]))

    def _dyn_Cast(self, node):
        v = self._get(node, 0)
        if not isinstance(v, _DynAcc) or v.cast or self._attrs(node).get("to") != self.onnx.TensorProto.FLOAT:
            raise self._error(node, "only the Cast of a MatMulInteger result to float is supported")
        return _DynAcc(v.name, v.a, v.b, v.shape, True)

    def _dyn_Mul(self, node):
        pair = (self._get(node, 0), self._get(node, 1))
        acc = next((v for v in pair if isinstance(v, _DynAcc)), None)
        scale = next((v for v in pair if isinstance(v, _DynQ) and v.part == "scale"), None)
        if acc is not None:
            other = pair[1] if pair[0] is acc else pair[0]
            if acc.cast and isinstance(other, _DynQ) and other.part == "scales":
                return self._dynamic_product(node, acc, other)
        elif scale is not None:
            other = pair[1] if pair[0] is scale else pair[0]
            if isinstance(other, _Const):
                return _DynQ(scale.x, "scales", np.asarray(other.value, np.float32))
            if isinstance(other, _DynQ) and other.part == "scale":
                return _DynQ(scale.x, "scales", other.x)
        raise self._error(node, "only Mul(scale, scale) and Mul(Cast(MatMulInteger), scales) are supported between "
                                "dynamic quantizations")

    def _dynamic_product(self, node, acc: _DynAcc, scales: _DynQ) -> _FloatT:
        """The ``dynamic_matmul`` node of MatMulInteger -> Cast -> Mul: ``scales`` must be the product of
        the same operands' scales."""
        if isinstance(acc.b, _FloatT):
            if {id(scales.x), id(scales.factor)} != {id(acc.a), id(acc.b)}:
                raise self._error(node, "the scales are not those of the MatMulInteger's operands")
            return self._float_emit("dynamic_matmul", node, (acc.a.name, acc.b.name), acc.shape)
        if scales.x is not acc.a:
            raise self._error(node, "the scales are not those of the MatMulInteger's first operand")
        w, zp = acc.b
        scale = np.asarray(scales.factor, np.float32).ravel()
        if not isinstance(scales.factor, np.ndarray) or scale.size not in (1, w.shape[1]):
            raise self._error(node, f"weights {w.shape} need one scale or one per column, got {scale.size}")
        per_column = scale.size > 1 or zp.size > 1
        n = w.shape[1] if per_column else 1
        weights = self._tensor(f"{acc.name}:weights", w.shape, tuple(np.broadcast_to(scale, (n,)).tolist()),
                               tuple(np.broadcast_to(zp, (n,)).tolist()), w.dtype.name, w, 1 if per_column else None)
        return self._float_emit("dynamic_matmul", node, (acc.a.name, weights), acc.shape)

    def _dyn_Add(self, node):
        x, y = self._get(node, 0), self._get(node, 1)
        if isinstance(x, _Const):
            x, y = y, x
        a = self._float_operand(node, x)
        if isinstance(y, _Const):
            value = np.asarray(y.value, np.float32)
            full = np.broadcast_shapes((1, *a.shape), value.shape)
            if len(full) != len(a.shape) + 1:
                raise self._error(node, f"a constant of shape {value.shape} broadcasts over the batch axis of {a.shape}")
            other = self._tensor(f"{self._name(node)}:constant", value.shape, dtype="float32", data=value)
            return self._float_emit("float_add", node, (a.name, other), full[1:])
        b = self._float_operand(node, y)
        try:
            shape = np.broadcast_shapes(a.shape, b.shape)
        except ValueError:
            raise self._error(node, f"float tensors {a.shape} and {b.shape} do not broadcast") from None
        return self._float_emit("float_add", node, (a.name, b.name), shape)

    def _dyn_clip(self, node, lo: float, hi: float) -> _FloatT:
        x = self._float_operand(node, self._get(node, 0))
        return self._float_emit("float_clip", node, (x.name,), x.shape, FloatClipAttrs(lo, hi))

    def _dyn_Relu(self, node):
        return self._dyn_clip(node, 0.0, np.inf)

    def _dyn_Clip(self, node):
        return self._dyn_clip(node, *self._clip_bounds(node))

    def _dyn_reshape(self, node, shape) -> _FloatT:
        x = self._float_operand(node, self._get(node, 0))
        if int(np.prod(shape)) != int(np.prod(x.shape)):
            raise self._error(node, f"cannot reshape per-sample {x.shape} to {shape}")
        return self._float_emit("reshape", node, (x.name,), shape)

    def _dyn_Flatten(self, node):
        if self._attrs(node).get("axis", 1) != 1:
            raise self._error(node, "only axis=1 (keep the batch axis) is supported")
        return self._dyn_reshape(node, (int(np.prod(self._get(node, 0).shape)),))

    def _dyn_Reshape(self, node):
        return self._dyn_reshape(node, self._reshape_target(node, self._get(node, 0)))

    def _dyn_Transpose(self, node):
        x = self._float_operand(node, self._get(node, 0))
        per_sample = self._per_sample_perm(node, len(x.shape))
        return self._float_emit("transpose", node, (x.name,), tuple(x.shape[p] for p in per_sample),
                                TransposeAttrs(per_sample))

    # -- float heads and tails (the QOperator form leaves LayerNormalization in float) ---------------
    def _dyn_LayerNormalization(self, node):
        x = self._float_operand(node, self._get(node, 0))
        return self._float_emit("float_layer_norm", node, (x.name,), x.shape,
                                FloatLayerNormAttrs(*self._layer_norm_params(node, x.shape)))

    def _dyn_QuantizeLinear(self, node):
        """QuantizeLinear of a float32 tensor: a ``quantize`` node (static grid)."""
        x = self._float_operand(node, self._get(node, 0))
        s, z, dtype = self._scalar_q(node, self._const(node, 1), self._const(node, 2, optional=True), "output")
        out = self._emit("quantize", self._name(node), "QuantizeLinear", (x.name,), node.output[0], x.shape, s, z)
        return _Q(out, x.shape, s, z, dtype)

    def _float_tail(self, v: _Float) -> _FloatT:
        """A graph output that is a LayerNormalization of a quantized tensor with no QuantizeLinear after
        it: ``dequantize`` and ``float_layer_norm`` nodes."""
        if v.kind != "layer_norm":
            raise ValueError(f"output is a {v.kind} result that is never quantized; only a LayerNormalization "
                             f"may stay float at the end")
        q = v.inputs[0]
        x = self._emit("dequantize", f"{v.name}:dequantize", "LayerNormalization", (q.name,), f"{v.name}:float",
                       self._ir_shape(q), 1.0, 0, None, "float32")
        out = self._emit("float_layer_norm", v.name, v.source, (x,), self.graph.output[0].name, self._ir_shape(q),
                         1.0, 0, FloatLayerNormAttrs(*v.params), "float32")
        return _FloatT(out, v.shape)
